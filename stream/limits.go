package stream

import (
	"fmt"
	"net/http"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Limits bounds what clients may open. Zero fields mean no limit.
type Limits struct {
	MaxStreams   int     // streams in the whole process; past it: 503
	PerIP        int     // concurrent streams per client IP; past it: 429
	PerSubject   int     // concurrent streams per token subject; past it: 429
	ConnectRate  float64 // new streams per second per client IP; past it: 429
	ConnectBurst int
}

// maxRateEntries bounds the per-IP rate limiter table; idle entries are dropped
// when it is full.
const maxRateEntries = 1 << 16

// admission enforces Limits. Its maps are keyed by client input but bounded:
// counts exist only while streams are open (at most MaxStreams, or one per
// connection), and the rate table holds at most maxRateEntries.
type admission struct {
	limits Limits

	mu        sync.Mutex
	total     int
	byIP      map[string]int
	bySubject map[string]int
	rates     map[string]*rate.Limiter
}

func newAdmission(l Limits) *admission {
	return &admission{limits: l, byIP: map[string]int{}, bySubject: map[string]int{}, rates: map[string]*rate.Limiter{}}
}

// allowConnect spends one of ip's connection tokens. It runs before the token
// is verified, so a flood costs no signature checks.
func (a *admission) allowConnect(ip string, now time.Time) *RequestError {
	if a.limits.ConnectRate <= 0 {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	lim := a.rates[ip]
	if lim == nil {
		if len(a.rates) >= maxRateEntries {
			a.dropIdleRates(now)
		}
		if len(a.rates) >= maxRateEntries {
			return tooMany(http.StatusServiceUnavailable, "ip", "too many clients right now", time.Second)
		}
		lim = rate.NewLimiter(rate.Limit(a.limits.ConnectRate), max(1, a.limits.ConnectBurst))
		a.rates[ip] = lim
	}
	if r := lim.ReserveN(now, 1); !r.OK() || r.DelayFrom(now) > 0 {
		delay := r.DelayFrom(now)
		r.CancelAt(now)
		return tooMany(http.StatusTooManyRequests, "ip", fmt.Sprintf("more than %g new streams per second from this address", a.limits.ConnectRate), delay)
	}
	return nil
}

// dropIdleRates forgets limiters whose bucket has refilled: they hold no state
// worth keeping. a.mu is held.
func (a *admission) dropIdleRates(now time.Time) {
	for ip, lim := range a.rates {
		if lim.TokensAt(now) >= float64(lim.Burst()) {
			delete(a.rates, ip)
		}
	}
}

// acquire counts a new stream against the limits; release undoes it.
func (a *admission) acquire(ip, subject string) (release func(), err *RequestError) {
	a.mu.Lock()
	defer a.mu.Unlock()
	l := a.limits
	switch {
	case l.MaxStreams > 0 && a.total >= l.MaxStreams:
		return nil, tooMany(http.StatusServiceUnavailable, "", fmt.Sprintf("this server holds its maximum of %d streams; another replica may have room", l.MaxStreams), 5*time.Second)
	case l.PerIP > 0 && a.byIP[ip] >= l.PerIP:
		return nil, tooMany(http.StatusTooManyRequests, "ip", fmt.Sprintf("%d streams are open from this address already; close one, or carry more topics per stream", l.PerIP), 5*time.Second)
	case l.PerSubject > 0 && subject != "" && a.bySubject[subject] >= l.PerSubject:
		return nil, tooMany(http.StatusTooManyRequests, "token", fmt.Sprintf("%d streams are open for this token's subject already; close one, or carry more topics per stream", l.PerSubject), 5*time.Second)
	}
	a.total++
	a.byIP[ip]++
	if subject != "" {
		a.bySubject[subject]++
	}
	var once sync.Once
	return func() { once.Do(func() { a.release(ip, subject) }) }, nil
}

func (a *admission) release(ip, subject string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.total--
	if a.byIP[ip]--; a.byIP[ip] <= 0 {
		delete(a.byIP, ip)
	}
	if subject != "" {
		if a.bySubject[subject]--; a.bySubject[subject] <= 0 {
			delete(a.bySubject, subject)
		}
	}
}

func tooMany(status int, param, reason string, retryAfter time.Duration) *RequestError {
	return &RequestError{Status: status, Param: param, Reason: reason, RetryAfter: max(retryAfter, time.Second)}
}
