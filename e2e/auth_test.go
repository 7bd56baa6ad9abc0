package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/golang-jwt/jwt/v5"

	"pgsse/internal/dbtest"
)

const (
	testSecret   = "0123456789abcdef0123456789abcdef-test-secret"
	testIssuer   = "https://issuer.test"
	testAudience = "pgsse"
)

// keys are the test's signing keys; the server trusts the public halves of rsaKey
// and ecKey (a JWKS file) and testSecret.
type keys struct {
	rsaKey, otherRSA *rsa.PrivateKey
	ecKey            *ecdsa.PrivateKey
	jwksFile         string
	rsaPEM           []byte // the trusted RSA public key, as PEM
}

func newKeys(t *testing.T) *keys {
	t.Helper()
	k := &keys{}
	var err error
	if k.rsaKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		t.Fatal(err)
	}
	if k.otherRSA, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		t.Fatal(err)
	}
	if k.ecKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&k.rsaKey.PublicKey)
	k.rsaPEM = pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	b64 := func(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
	ecPub, _ := k.ecKey.PublicKey.Bytes() // uncompressed point: 0x04 || x || y
	jwks, _ := json.Marshal(map[string]any{"keys": []map[string]string{
		{"kty": "RSA", "kid": "rsa1", "use": "sig", "n": b64(k.rsaKey.N.Bytes()), "e": b64(big.NewInt(int64(k.rsaKey.E)).Bytes())},
		{"kty": "EC", "kid": "ec1", "use": "sig", "crv": "P-256", "x": b64(ecPub[1:33]), "y": b64(ecPub[33:])},
	}})
	k.jwksFile = filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(k.jwksFile, jwks, 0o600); err != nil {
		t.Fatal(err)
	}
	return k
}

func (k *keys) env() []string {
	return []string{"PGSSE_AUTH_MODE=jwt", "PGSSE_JWT_SECRET=" + testSecret, "PGSSE_JWT_KEY_FILE=" + k.jwksFile,
		"PGSSE_JWT_ISSUER=" + testIssuer, "PGSSE_JWT_AUDIENCE=" + testAudience}
}

// claims returns valid claims granting topics for a minute.
func claims(sub string, topics ...string) jwt.MapClaims {
	return jwt.MapClaims{
		"sub": sub, "iss": testIssuer, "aud": testAudience,
		"exp": time.Now().Add(time.Minute).Unix(), "iat": time.Now().Unix(),
		"pgsse": map[string]any{"topics": topics},
	}
}

func sign(t *testing.T, method jwt.SigningMethod, key any, c jwt.MapClaims, kid string) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func hs(t *testing.T, c jwt.MapClaims) string {
	return sign(t, jwt.SigningMethodHS256, []byte(testSecret), c, "")
}

// get sends a GET with the given header (name: value) and returns the response.
func get(t *testing.T, url string, header ...string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	for i := 0; i+1 < len(header); i += 2 {
		if header[i] != "" {
			req.Header.Set(header[i], header[i+1])
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// TestAuth_BadTokens: every bad token or request gets its 401 or 403 with a
// JSON error, and none reaches a stream.
func TestAuth_BadTokens(t *testing.T) {
	url := dbtest.New(t)
	k := newKeys(t)
	p := startPgsse(t, url, k.env()...)
	stream := p.URL + "/events?topic=videos/a"

	expired := claims("u", "videos/a")
	expired["exp"] = time.Now().Add(-time.Hour).Unix()
	notYet := claims("u", "videos/a")
	notYet["nbf"] = time.Now().Add(time.Hour).Unix()
	noExp := claims("u", "videos/a")
	delete(noExp, "exp")
	wrongIss := claims("u", "videos/a")
	wrongIss["iss"] = "https://evil.test"
	wrongAud := claims("u", "videos/a")
	wrongAud["aud"] = "someone-else"
	noTopics := claims("u")
	delete(noTopics, "pgsse")
	topicsNotArray := claims("u")
	topicsNotArray["pgsse"] = map[string]any{"topics": "videos/a"}
	badTopic := claims("u", "videos/a b")
	huge := claims("u", "videos/a")
	huge["pad"] = strings.Repeat("x", 9000)
	none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, claims("u", "videos/a")).SignedString(jwt.UnsafeAllowNoneSignatureType)

	bearer := func(tok string) []string { return []string{"Authorization", "Bearer " + tok} }
	for _, tc := range []struct {
		name       string
		target     string
		header     []string
		wantStatus int
	}{
		{"NoToken", stream, nil, 401},
		{"Garbage", stream, bearer("not.a.jwt"), 401},
		{"BasicScheme", stream, []string{"Authorization", "Basic dXNlcjpwYXNz"}, 401},
		{"EmptyBearer", stream, []string{"Authorization", "Bearer "}, 401},
		{"Expired", stream, bearer(hs(t, expired)), 401},
		{"NotYetValid", stream, bearer(hs(t, notYet)), 401},
		{"NoExp", stream, bearer(hs(t, noExp)), 401},
		{"WrongSignature", stream, bearer(sign(t, jwt.SigningMethodHS256, []byte("another-secret-another-secret-1234"), claims("u", "videos/a"), "")), 401},
		{"AlgNone", stream, bearer(none), 401},
		{"HS256WithRSAPublicKey", stream, bearer(sign(t, jwt.SigningMethodHS256, k.rsaPEM, claims("u", "videos/a"), "rsa1")), 401},
		{"RS256UnknownKey", stream, bearer(sign(t, jwt.SigningMethodRS256, k.otherRSA, claims("u", "videos/a"), "rsa1")), 401},
		{"WrongIssuer", stream, bearer(hs(t, wrongIss)), 401},
		{"WrongAudience", stream, bearer(hs(t, wrongAud)), 401},
		{"NoTopicsClaim", stream, bearer(hs(t, noTopics)), 401},
		{"TopicsClaimNotArray", stream, bearer(hs(t, topicsNotArray)), 401},
		{"InvalidTopicInClaim", stream, bearer(hs(t, badTopic)), 401},
		{"Oversized", stream, bearer(hs(t, huge)), 401},
		{"QueryTokenDisabled", stream + "&access_token=" + hs(t, claims("u", "videos/a")), nil, 401},
		{"OtherVideo", p.URL + "/events?topic=videos/b", bearer(hs(t, claims("u", "videos/a"))), 403},
		{"OtherVideoShortForm", p.URL + "/videos/b/events", bearer(hs(t, claims("u", "videos/a"))), 403},
		{"WildcardNotGranted", p.URL + "/events?topic=videos/*", bearer(hs(t, claims("u", "videos/a"))), 403},
		{"OneOfTwoNotGranted", p.URL + "/events?topic=videos/a&topic=videos/b", bearer(hs(t, claims("u", "videos/a"))), 403},
		{"CookieForOtherVideo", p.URL + "/videos/b/events", []string{"Cookie", "pgsse_token=" + hs(t, claims("u", "videos/a"))}, 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := get(t, tc.target, tc.header...)
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.wantStatus, body)
			}
			var e struct {
				Error  string   `json:"error"`
				Param  string   `json:"param"`
				Topics []string `json:"topics"`
			}
			if err := json.Unmarshal(body, &e); err != nil || e.Error == "" || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
				t.Fatalf("body %q is not a JSON error", body)
			}
			if tc.wantStatus == 401 && resp.Header.Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
			if tc.wantStatus == 403 && (len(e.Topics) == 0 || !strings.Contains(e.Error, e.Topics[0])) {
				t.Errorf("403 does not name the forbidden topics: %s", body)
			}
		})
	}
	if hasLine(p.logs.String(), `"message":"stream started"`) {
		t.Error("a bad request reached a stream")
	}

	t.Run("ValidTokens", func(t *testing.T) {
		for name, header := range map[string][]string{
			"HS256Header":   bearer(hs(t, claims("u", "videos/*"))),
			"RS256JWKS":     bearer(sign(t, jwt.SigningMethodRS256, k.rsaKey, claims("u", "videos/a"), "rsa1")),
			"ES256JWKS":     bearer(sign(t, jwt.SigningMethodES256, k.ecKey, claims("u", "videos/a"), "ec1")),
			"HS256Cookie":   {"Cookie", "pgsse_token=" + hs(t, claims("u", "videos/a"))},
			"WildcardGrant": bearer(hs(t, claims("u", "videos/*"))),
		} {
			resp := get(t, stream, header...)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("%s: status %d, want 200", name, resp.StatusCode)
			}
		}
	})
}

// TestAuth_Isolation: a client granted videos/a never sees anything of
// videos/b: not live, not on resume, not in snapshots.
func TestAuth_Isolation(t *testing.T) {
	url := dbtest.New(t)
	sqlDB := dbtest.Open(t, url)
	dbtest.InsertVideo(t, sqlDB, "a")
	dbtest.InsertVideo(t, sqlDB, "b")
	k := newKeys(t)
	p := startPgsse(t, url, k.env()...)
	token := hs(t, claims("alice", "videos/a"))

	s := openWith(t, p.URL+"/events?topic=videos/a", "", "Authorization", "Bearer "+token)
	snap := s.next(t)
	dbtest.SetStatus(t, sqlDB, "b", "processed")
	dbtest.SetStatus(t, sqlDB, "a", "processing")
	live := s.next(t)
	s.close()
	dbtest.SetStatus(t, sqlDB, "b", "failed")
	dbtest.SetStatus(t, sqlDB, "a", "processed")
	resumed := openWith(t, p.URL+"/events?topic=videos/a", live.LastEventID, "Authorization", "Bearer "+token)
	replayed := resumed.next(t)
	resumed.quiet(t, 300*time.Millisecond)

	for _, ev := range []received{snap, live, replayed} {
		if ev.env.Topic != "videos/a" {
			t.Errorf("client granted videos/a received %s %s", ev.env.Topic, ev.Data)
		}
	}
}

// TestAuth_Expiry: a stream ends within a second of its token's expiry, with a
// final auth.expired event.
func TestAuth_Expiry(t *testing.T) {
	url := dbtest.New(t)
	k := newKeys(t)
	p := startPgsse(t, url, k.env()...)
	c := claims("u", "videos/a")
	exp := time.Now().Add(2 * time.Second).Truncate(time.Second)
	c["exp"] = exp.Unix()
	s := openWith(t, p.URL+"/videos/a/events", "", "Authorization", "Bearer "+hs(t, c))
	ev := s.next(t)
	select {
	case <-s.ended:
	case <-time.After(5 * time.Second):
		t.Fatal("stream still open 5s after the token expired")
	}
	ended := time.Now()
	// No id: the client keeps the position the stream gave it (0: the log is empty).
	if ev.Type != "auth.expired" || ev.LastEventID != "0" || !strings.Contains(ev.Data, `"kind":"auth.expired"`) {
		t.Errorf("last event %+v, want auth.expired without id", ev)
	}
	if late := ended.Sub(exp); late > time.Second || late < -100*time.Millisecond {
		t.Errorf("stream ended %v after the token's expiry, want within a second", late)
	}
}

// TestAuth_Limits: each limit refuses at its configured value, says when to
// retry, logs it, and recovers once streams close.
func TestAuth_Limits(t *testing.T) {
	url := dbtest.New(t)
	k := newKeys(t)
	tokenFor := func(sub string) []string {
		return []string{"Authorization", "Bearer " + hs(t, claims(sub, "videos/*"))}
	}
	target := "/events?topic=videos/a"

	t.Run("PerIP", func(t *testing.T) {
		p := startPgsse(t, url, append(k.env(), "PGSSE_MAX_STREAMS_PER_IP=2")...)
		a := openWith(t, p.URL+target, "", tokenFor("u1")...)
		openWith(t, p.URL+target, "", tokenFor("u2")...)
		wantRefused(t, get(t, p.URL+target, tokenFor("u3")...), 429)
		a.close()
		waitFor(t, func() bool {
			resp := get(t, p.URL+target, tokenFor("u3")...)
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		})
		if !hasLine(p.logs.String(), `"message":"stream refused"`) {
			t.Error("no log line for the refusal")
		}
	})
	t.Run("TrustedProxy", func(t *testing.T) {
		// Behind a trusted proxy the limit is per forwarded client; from anyone
		// else X-Forwarded-For is ignored.
		from := func(ip, sub string) []string { return append(tokenFor(sub), "X-Forwarded-For", ip) }
		p := startPgsse(t, url, append(k.env(), "PGSSE_MAX_STREAMS_PER_IP=1", "PGSSE_TRUSTED_PROXIES=127.0.0.1/32")...)
		openWith(t, p.URL+target, "", from("203.0.113.1", "u1")...)
		wantRefused(t, get(t, p.URL+target, from("203.0.113.1", "u2")...), 429)
		other := get(t, p.URL+target, from("203.0.113.2", "u3")...)
		other.Body.Close()
		if other.StatusCode != http.StatusOK {
			t.Errorf("another forwarded client got %d, want 200", other.StatusCode)
		}

		untrusted := startPgsse(t, url, append(k.env(), "PGSSE_MAX_STREAMS_PER_IP=1")...)
		openWith(t, untrusted.URL+target, "", from("203.0.113.1", "u1")...)
		wantRefused(t, get(t, untrusted.URL+target, from("203.0.113.9", "u2")...), 429)
	})
	t.Run("PerSubject", func(t *testing.T) {
		p := startPgsse(t, url, append(k.env(), "PGSSE_MAX_STREAMS_PER_SUBJECT=1")...)
		a := openWith(t, p.URL+target, "", tokenFor("same")...)
		wantRefused(t, get(t, p.URL+target, tokenFor("same")...), 429)
		other := get(t, p.URL+target, tokenFor("different")...)
		other.Body.Close()
		if other.StatusCode != http.StatusOK {
			t.Errorf("another subject got %d", other.StatusCode)
		}
		a.close()
		waitFor(t, func() bool {
			resp := get(t, p.URL+target, tokenFor("same")...)
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		})
	})
	t.Run("Process", func(t *testing.T) {
		p := startPgsse(t, url, append(k.env(), "PGSSE_MAX_STREAMS=1")...)
		a := openWith(t, p.URL+target, "", tokenFor("u1")...)
		wantRefused(t, get(t, p.URL+target, tokenFor("u2")...), 503)
		a.close()
		waitFor(t, func() bool {
			resp := get(t, p.URL+target, tokenFor("u2")...)
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		})
	})
	t.Run("ConnectRate", func(t *testing.T) {
		p := startPgsse(t, url, append(k.env(), "PGSSE_CONNECT_RATE=2", "PGSSE_CONNECT_BURST=3")...)
		// The rate is checked before the token: even token-less requests spend it.
		statuses := map[int]int{}
		for range 5 {
			resp := get(t, p.URL+target)
			resp.Body.Close()
			statuses[resp.StatusCode]++
		}
		if statuses[401] != 3 || statuses[429] != 2 {
			t.Fatalf("statuses %v, want 3×401 then 2×429", statuses)
		}
		wantRefused(t, get(t, p.URL+target), 429)
		time.Sleep(600 * time.Millisecond) // one token back at 2/s
		resp := get(t, p.URL+target, tokenFor("u")...)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("after waiting: %d, want 200", resp.StatusCode)
		}
	})
	t.Run("HeaderSize", func(t *testing.T) {
		// The limit is PGSSE_MAX_HEADER_BYTES itself: net/http's 4 KiB of slack
		// used to let a 20 KB head through a 16 KiB limit.
		p := startPgsse(t, url, append(k.env(), "PGSSE_MAX_HEADER_BYTES=8192")...)
		for _, tc := range []struct {
			pad  int
			want int
		}{{8192 + 100, http.StatusRequestHeaderFieldsTooLarge}, {8192 - 1500, http.StatusOK}} {
			resp := get(t, p.URL+target, append(tokenFor("h"), "X-Pad", strings.Repeat("x", tc.pad))...)
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Errorf("a %d-byte header: status %d, want %d", tc.pad, resp.StatusCode, tc.want)
			}
		}
	})
}

func wantRefused(t *testing.T, resp *http.Response, status int) {
	t.Helper()
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != status || resp.Header.Get("Retry-After") == "" || !json.Valid(body) {
		t.Fatalf("got %d (Retry-After %q) %s, want %d with Retry-After and JSON", resp.StatusCode, resp.Header.Get("Retry-After"), body, status)
	}
}

// TestAuth_NoSecretsInLogs: with debug logging, no token, cookie or secret
// appears in any log line, whatever the request.
func TestAuth_NoSecretsInLogs(t *testing.T) {
	url := dbtest.New(t)
	k := newKeys(t)
	p := startPgsse(t, url, append(k.env(), "PGSSE_ALLOW_QUERY_TOKEN=true")...)
	good := hs(t, claims("u", "videos/a"))
	expired := claims("u", "videos/a")
	expired["exp"] = time.Now().Add(-time.Minute).Unix()
	bad := hs(t, expired)
	forbidden := hs(t, claims("u", "videos/b"))
	for _, r := range []struct{ target, name, value string }{
		{"/events?topic=videos/a", "Authorization", "Bearer " + good},
		{"/events?topic=videos/a", "Authorization", "Bearer " + bad},
		{"/events?topic=videos/a", "Cookie", "pgsse_token=" + good},
		{"/events?topic=videos/a", "Cookie", "pgsse_token=" + forbidden},
		{"/events?topic=videos/a&access_token=" + good, "", ""},
		{"/events?topic=videos/a&access_token=" + bad, "", ""},
		{"/events?topic=videos/a&access_token=" + forbidden, "", ""},
		{"/events?topic=videos/a&access_token=" + good + "&nope=1", "", ""},
	} {
		resp := get(t, p.URL+r.target, r.name, r.value)
		resp.Body.Close()
	}
	time.Sleep(200 * time.Millisecond)
	logs := p.logs.String()
	for _, tok := range []string{good, bad, forbidden} {
		for _, part := range strings.Split(tok, ".") { // no piece of it either
			if strings.Contains(logs, part) {
				t.Fatalf("a token appears in the logs:\n%s", logs)
			}
		}
	}
	if strings.Contains(logs, testSecret) {
		t.Fatal("the secret appears in the logs")
	}
	if !hasLine(logs, `"message":"stream started"`) || !hasLine(logs, `"message":"stream refused"`) {
		t.Fatalf("the requests left no trace at all:\n%s", logs)
	}
}

// TestBrowser_CookieToken: the demo page works when its token is a cookie.
func TestBrowser_CookieToken(t *testing.T) {
	url := dbtest.New(t)
	sqlDB := dbtest.Open(t, url)
	dbtest.InsertVideo(t, sqlDB, "c1")
	k := newKeys(t)
	p := startPgsse(t, url, append(k.env(), "PGSSE_DEMO=true")...)
	ctx := newBrowser(t)
	cookie := fmt.Sprintf("pgsse_token=%s; path=/; SameSite=Strict", hs(t, claims("viewer", "videos/*")))
	if err := chromedp.Do(ctx,
		chromedp.Navigate(p.URL+"/healthz"),
		chromedp.Evaluate[chromedp.Void](fmt.Sprintf("document.cookie = %q", cookie)),
		chromedp.Navigate(p.URL+"/"),
	); err != nil {
		t.Fatal(err)
	}
	waitPage(t, ctx, "c1 pending, live", func(st pageState) bool {
		return st.Conn == "live" && allVideos(st, 1, func(v pageVideo) bool { return v.Status == "pending" })
	})
	dbtest.SetStatus(t, sqlDB, "c1", "processed")
	waitPage(t, ctx, "c1 processed", func(st pageState) bool {
		return allVideos(st, 1, func(v pageVideo) bool { return v.Status == "processed" && v.Percent == "100" })
	})
}
