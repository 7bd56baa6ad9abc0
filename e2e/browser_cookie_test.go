package e2e

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"pgsse/internal/dbtest"
	"pgsse/internal/doctest"
)

// TestBrowser_CrossOriginCookieRenewal runs the README's cross-origin recipe
// as written, in Chromium: an app on https://app.example.test sets the token
// cookie the README's way (Domain= the parent domain), the README's script
// streams from pgsse behind TLS on https://events.example.test, and each time a
// short-lived token expires it renews the cookie and resumes where it left off:
// every status change arrives once, none is lost across the renewals.
func TestBrowser_CrossOriginCookieRenewal(t *testing.T) {
	url0 := dbtest.New(t)
	sqlDB := dbtest.Open(t, url0)
	dbtest.InsertVideo(t, sqlDB, "abc123")

	cookieRecipe := strings.TrimPrefix(doctest.Find(t, "README.md", "Set-Cookie: pgsse_token=").Text, "Set-Cookie: ")
	script := doctest.Find(t, "README.md", "auth.expired").Text

	// The app: a page with the README's script, and the renewal endpoint it
	// calls. Tokens live 2 s, so the stream expires and is renewed repeatedly.
	var renewals atomic.Int32
	setCookie := func(w http.ResponseWriter) {
		token := hs(t, claimsFor(2*time.Second, "u", "videos/abc123"))
		c := strings.ReplaceAll(strings.TrimSpace(cookieRecipe), "<token>", token)
		w.Header().Set("Set-Cookie", strings.ReplaceAll(c, "Domain=example.com", "Domain=example.test"))
	}
	var eventsOrigin string
	app := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/":
			setCookie(w) // signing in
			fmt.Fprintf(w, `<!doctype html><title>app</title><ul id="got"></ul><script>
				function render(id, status) {
					const li = document.createElement('li'); li.textContent = status; document.querySelector('#got').append(li);
				}
				%s</script>`, strings.ReplaceAll(script, "https://events.example.com", eventsOrigin))
		case "/api/pgsse-token":
			renewals.Add(1)
			setCookie(w)
		default:
			http.NotFound(w, r)
		}
	}))
	defer app.Close()
	appOrigin := "https://app.example.test:" + app.URL[strings.LastIndex(app.URL, ":")+1:]

	p := startPgsse(t, url0, "PGSSE_AUTH_MODE=jwt", "PGSSE_JWT_SECRET="+testSecret,
		"PGSSE_JWT_ISSUER="+testIssuer, "PGSSE_JWT_AUDIENCE="+testAudience, "PGSSE_CORS_ORIGINS="+appOrigin)
	target, _ := url.Parse(p.URL)
	events := httptest.NewTLSServer(httputil.NewSingleHostReverseProxy(target)) // the ingress, ending TLS
	defer events.Close()
	eventsOrigin = "https://events.example.test:" + events.URL[strings.LastIndex(events.URL, ":")+1:]

	ctx := newBrowser(t, chromedp.Flag("host-resolver-rules", "MAP *.example.test 127.0.0.1"),
		chromedp.Flag("ignore-certificate-errors", true))
	if err := chromedp.Do(ctx, chromedp.Navigate(appOrigin+"/")); err != nil {
		t.Fatal(err)
	}
	got := func() []string {
		s, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll('#got li')].map(li => li.textContent)`))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); !ok(); time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: page got %v after %d renewals\n%s", what, got(), renewals.Load(), p.logs)
			}
		}
	}
	want := []string{"pending"}
	waitFor("the snapshot through the cookie", func() bool { return fmt.Sprint(got()) == fmt.Sprint(want) })
	for _, status := range []string{"processing", "processed", "failed"} {
		before := renewals.Load()
		waitFor("a renewal", func() bool { return renewals.Load() > before })
		dbtest.SetStatus(t, sqlDB, "abc123", status) // around the reconnect
		want = append(want, status)
		waitFor(status+" after a renewal", func() bool { return len(got()) >= len(want) })
	}
	if fmt.Sprint(got()) != fmt.Sprint(want) {
		t.Errorf("the page got %v, want %v: each change once, in order", got(), want)
	}
}

// claimsFor is claims with a lifetime of d.
func claimsFor(d time.Duration, sub string, topics ...string) map[string]any {
	c := claims(sub, topics...)
	c["exp"] = time.Now().Add(d).Unix()
	return c
}
