package dbtest

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	zlog "github.com/rs/zerolog/log"
)

// Proxy is a fault-injecting TCP proxy (Shopify's toxiproxy, in process)
// between a test's client and the test server.
type Proxy struct {
	tb    testing.TB
	proxy *toxiproxy.Proxy
}

// quietToxics silences the toxics that log through zerolog's global logger
// (bandwidth does, at trace level), once, before any proxy runs.
var quietToxics sync.Once

// NewProxy starts a proxy to the server of dbURL; it stops when the test ends.
func NewProxy(tb testing.TB, dbURL string) *Proxy {
	tb.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		tb.Fatal(err)
	}
	quietToxics.Do(func() { zlog.Logger = zerolog.Nop() })
	server := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	p := toxiproxy.NewProxy(server, "postgres", "127.0.0.1:0", u.Host)
	if err := p.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(p.Stop)
	return &Proxy{tb: tb, proxy: p}
}

// URL returns dbURL with its host and port replaced by the proxy's.
func (p *Proxy) URL(dbURL string) string {
	u, err := url.Parse(dbURL)
	if err != nil {
		p.tb.Fatal(err)
	}
	u.Host = p.proxy.Listen
	return u.String()
}

// BlackHole makes the proxy swallow everything, both ways, on every
// connection: sockets stay open and nothing answers (a stalled server or a
// dropped route behind a proxy that still accepts).
func (p *Proxy) BlackHole() {
	p.add("blackhole-up", "timeout", "upstream", `{"timeout":0}`)
	p.add("blackhole-down", "timeout", "downstream", `{"timeout":0}`)
}

// Latency delays the server's answers by ms milliseconds.
func (p *Proxy) Latency(ms int) {
	p.add("latency", "latency", "downstream", fmt.Sprintf(`{"latency":%d,"jitter":%d}`, ms, ms/4))
}

// Bandwidth limits the server's answers to kbps kilobytes per second.
func (p *Proxy) Bandwidth(kbps int) {
	p.add("bandwidth", "bandwidth", "downstream", fmt.Sprintf(`{"rate":%d}`, kbps))
}

// ResetPeer resets every connection (TCP RST) as soon as data flows, and
// each new one too, until Heal.
func (p *Proxy) ResetPeer() {
	p.add("reset", "reset_peer", "upstream", `{"timeout":0}`)
}

// Heal removes every fault.
func (p *Proxy) Heal() {
	p.proxy.Toxics.ResetToxics(context.Background())
}

func (p *Proxy) add(name, kind, stream, attributes string) {
	p.tb.Helper()
	body := fmt.Sprintf(`{"name":%q,"type":%q,"stream":%q,"toxicity":1,"attributes":%s}`, name, kind, stream, attributes)
	if _, err := p.proxy.Toxics.AddToxicJson(strings.NewReader(body)); err != nil {
		p.tb.Fatalf("add %s toxic: %v", kind, err)
	}
}
