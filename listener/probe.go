package listener

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sync/atomic"
	"time"

	"github.com/lib/pq"
)

// probeChannel carries the listener's test notifications: sent through the pool,
// they must come back on the LISTEN connection. Through a transaction-mode
// pooler (PgBouncer) LISTEN succeeds and then hears nothing; without the probe
// delivery would fall back to the safety poll with nobody told.
const probeChannel = "pgsse_probe"

// Probe timings: how long a probe may take to come back, and how often one is
// sent again while they do not.
const (
	probeTimeout = 5 * time.Second
	probeRetry   = 30 * time.Second
)

// probe is the state of the notification check. The drain goroutine calls seen;
// everything else runs on the listener's loop.
type probe struct {
	token     atomic.Pointer[string]
	back      chan struct{} // one slot: the current token came back
	again     chan struct{} // one slot: the connection was re-established
	timer     *time.Timer   // fires when the current probe is overdue
	receiving atomic.Bool
	sent      bool // the current probe went out: its absence means something
	failing   bool
}

func newProbe() *probe {
	p := &probe{back: make(chan struct{}, 1), again: make(chan struct{}, 1), timer: time.NewTimer(time.Hour)}
	p.timer.Stop()
	return p
}

// seen reports whether n is a probe notification (any replica's) and signals
// when it is this one's current probe. A nil n (reconnected) asks for a probe.
func (p *probe) seen(n *pq.Notification) bool {
	if n == nil {
		signal(p.again)
		return false
	}
	if n.Channel != probeChannel {
		return false
	}
	if t := p.token.Load(); t != nil && n.Extra == *t {
		signal(p.back)
	}
	return true
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// sendProbe sends a fresh probe and arms the timeout. A failed send is retried
// when the timer fires, like a probe that did not come back.
func (l *Listener) sendProbe(ctx context.Context) {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	token := hex.EncodeToString(b)
	l.probe.token.Store(&token)
	l.probe.timer.Reset(probeTimeout)
	err := l.log.Notify(ctx, probeChannel, token)
	l.probe.sent = err == nil
	if err != nil && ctx.Err() == nil {
		l.cfg.Logger.Debug().Err(err).Msg("send listener probe")
	}
}

// probeCameBack records that the LISTEN connection receives notifications.
func (l *Listener) probeCameBack() {
	l.probe.timer.Stop()
	l.probe.token.Store(nil)
	l.setReceiving(true)
	if l.probe.failing {
		l.probe.failing = false
		l.cfg.Logger.Info().Msg("listener receives notifications again")
	}
}

// probeOverdue flags a LISTEN connection that hears nothing, then tries again.
// A probe that could not be sent, or a connection that is down, says nothing
// about hearing: that is an outage, reported as such elsewhere.
func (l *Listener) probeOverdue(ctx context.Context) {
	if !l.probe.sent || !l.connected.Load() {
		l.sendProbe(ctx)
		return
	}
	l.setReceiving(false)
	if !l.probe.failing {
		l.probe.failing = true
		l.cfg.Logger.Error().Dur("waited", probeTimeout).
			Msg("the LISTEN connection receives no notifications (a transaction-mode pooler such as PgBouncer?): " +
				"set PGSSE_LISTEN_DATABASE_URL to a direct connection; until then events arrive by the safety poll only")
	}
	l.sendProbe(ctx)
	l.probe.timer.Reset(probeRetry)
}

func (l *Listener) setReceiving(ok bool) {
	l.probe.receiving.Store(ok)
	if ok {
		l.cfg.Metrics.Receiving.Set(1)
	} else {
		l.cfg.Metrics.Receiving.Set(0)
	}
}

// Receiving reports whether the LISTEN connection is up and its last probe came
// back: notifications reach it.
func (l *Listener) Receiving() bool { return l.connected.Load() && l.probe.receiving.Load() }
