package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"pgsse/internal/dbtest"
	"pgsse/internal/doctest"
)

// TestDocs_EveryBlockAccounted: every code block of README.md and docs/ is run
// by a test named here, or is plainly illustrative; a new block fails this
// test until it is one or the other.
func TestDocs_EveryBlockAccounted(t *testing.T) {
	const illustrative = ""
	accounts := []struct{ file, marker, test string }{
		{"README.md", "worker / API", illustrative}, // the diagram
		{"README.md", "make run    #", "TestMakeRun_Throwaway"},
		{"README.md", "curl -N 'http://localhost:8080/events?topic=videos/abc123'", "TestDocs_QuickStart"},
		{"README.md", "psql postgres://postgres@127.0.0.1:54320/pgsse", "TestDocs_QuickStart"},
		{"README.md", "retry: 2451", "TestDocs_QuickStart"},
		{"README.md", "const ids = ", illustrative}, // what the demo page's script does (TestBrowser_LivePage)
		{"README.md", "Set-Cookie: pgsse_token=", "TestBrowser_CrossOriginCookieRenewal"},
		{"README.md", `addEventListener("auth.expired"`, "TestBrowser_CrossOriginCookieRenewal"},
		{"README.md", `"exp": <now + 900>`, "TestDocs_TokenClaims"},
		{"README.md", "SELECT pgsse.publish('video.progress'", "TestDocs_QuickStart"},
		{"docs/database.md", "-f deploy/postgres/roles.sql", "TestRolesScript"},
		{"docs/database.md", "REVOKE EXECUTE ON FUNCTION pgsse.publish", "TestRolesScript"},
		{"README.md", "CREATE FUNCTION pgsse.thumbnail_ready()", "TestDocs_AddingAKind"},
		{"docs/security.md", "jwt.NewWithClaims", illustrative},                          // a fragment of the reader's own API
		{"README.md", "make image IMAGE=registry.example.com/pgsse", "TestRelease_Make"}, // and TestKustomize_SetImageNames
		{"docs/security.md", "openssl dgst -sha256 -hmac", "TestDocs_ShellToken"},
	}
	files, _ := filepath.Glob("docs/*.md")
	tests := testSources(t)
	used := make([]bool, len(accounts))
	for _, file := range append([]string{"README.md"}, files...) {
		for _, b := range doctest.Blocks(t, file) {
			n := 0
			for i, a := range accounts {
				if a.file == file && strings.Contains(b.Text, a.marker) {
					n, used[i] = n+1, true
				}
			}
			if n != 1 {
				t.Errorf("%s:%d: the code block matches %d entries here, want 1: run it in a test, or list it as illustrative", file, b.Line, n)
			}
		}
	}
	for i, a := range accounts {
		if !used[i] {
			t.Errorf("no code block of %s contains %q any more", a.file, a.marker)
		}
		if a.test != illustrative && !strings.Contains(tests, "func "+a.test+"(") {
			t.Errorf("%s, said to run %s's block %q, does not exist", a.test, a.file, a.marker)
		}
	}
}

// testSources is the text of every test file of the repository.
func testSources(t *testing.T) string {
	t.Helper()
	var all strings.Builder
	err := filepath.WalkDir(".", func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() && strings.HasPrefix(d.Name(), ".") && path != "." {
			return filepath.SkipDir
		}
		if strings.HasSuffix(path, "_test.go") {
			b, err := os.ReadFile(path)
			all.Write(b)
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return all.String()
}

// sseEvent is an event as curl prints it, without what changes from run to
// run (ids, times).
type sseEvent struct {
	Name, Kind, Topic, Data string
}

func parseEvent(t *testing.T, name, data string) sseEvent {
	t.Helper()
	var env struct {
		Kind  string          `json:"kind"`
		Topic string          `json:"topic"`
		Data  json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal([]byte(data), &env); err != nil {
		t.Fatalf("event data %q: %v", data, err)
	}
	var d any
	_ = json.Unmarshal(env.Data, &d)
	canonical, _ := json.Marshal(d)
	return sseEvent{name, env.Kind, env.Topic, string(canonical)}
}

// readEvents parses events from r (curl's output) and sends each on the channel.
func readEvents(t *testing.T, r io.Reader, out chan<- sseEvent) {
	sc := bufio.NewScanner(r)
	var name string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: ") && name != "":
			out <- parseEvent(t, name, strings.TrimPrefix(line, "data: "))
			name = ""
		}
	}
	close(out)
}

// shell runs script with sh; it is killed when the test ends.
func shell(t *testing.T, script string, env ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sh", "-c", script)
	cmd.Env = append(os.Environ(), env...)
	t.Cleanup(func() {
		if cmd.Process != nil {
			_ = cmd.Process.Kill()
		}
	})
	return cmd
}

// TestDocs_QuickStart runs the README's quick start against a fresh database
// (its curl, its two psql commands, then its pgsse.publish) and checks curl
// prints what the README shows, ids and times aside.
func TestDocs_QuickStart(t *testing.T) {
	dbURL := dbtest.NewEmpty(t)
	p := startPgsse(t, dbURL)
	local := func(b doctest.Block) string {
		return strings.NewReplacer("http://localhost:8080", p.URL, "postgres://postgres@127.0.0.1:54320/pgsse", dbURL).Replace(b.Text)
	}

	curl := shell(t, local(doctest.Find(t, "README.md", "curl -N 'http://localhost:8080/events?topic=videos/abc123'")))
	stdout, err := curl.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := curl.Start(); err != nil {
		t.Fatal(err)
	}
	events := make(chan sseEvent, 16)
	go readEvents(t, stdout, events)
	// A fresh subscription gets what is published after it has started: wait.
	waitFor(t, func() bool { return scrape(t, p.URL)["pgsse_streams_open"] == 1 })
	if out, err := shell(t, local(doctest.Find(t, "README.md", "psql postgres://postgres@127.0.0.1:54320/pgsse"))).CombinedOutput(); err != nil {
		t.Fatalf("the README's psql commands: %v\n%s", err, out)
	}
	if out, err := exec.Command("psql", dbURL, "-v", "ON_ERROR_STOP=1", "-c", doctest.Find(t, "README.md", "SELECT pgsse.publish('video.progress'").Text).CombinedOutput(); err != nil {
		t.Fatalf("the README's pgsse.publish: %v\n%s", err, out)
	}

	var want []sseEvent
	var name string
	for _, line := range strings.Split(doctest.Find(t, "README.md", "retry: 2451").Text, "\n") {
		if n, ok := strings.CutPrefix(line, "event: "); ok {
			name = n
		} else if d, ok := strings.CutPrefix(line, "data: "); ok {
			want = append(want, parseEvent(t, name, d))
		}
	}
	published := regexp.MustCompile(`'(\{.*\})'`).FindStringSubmatch(doctest.Find(t, "README.md", "SELECT pgsse.publish('video.progress'").Text)[1]
	want = append(want, parseEvent(t, "video.progress", `{"kind":"video.progress","topic":"videos/abc123","data":`+published+`}`))
	for i, w := range want {
		select {
		case got, ok := <-events:
			if !ok {
				t.Fatalf("curl ended after %d events", i)
			}
			if got != w {
				t.Errorf("event %d: curl printed %+v, the README shows %+v", i, got, w)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("event %d (%+v) did not arrive", i, w)
		}
	}
}

// TestDocs_BadRequest: the README's example of a refused request is what the
// server answers, byte for byte.
func TestDocs_BadRequest(t *testing.T) {
	p := startPgsse(t, dbtest.New(t))
	line := doctest.Line(t, "README.md", `{"error":"unknown parameter`)
	want := regexp.MustCompile("`(\\{\"error\".*?\\})`").FindStringSubmatch(line)[1]
	param := regexp.MustCompile(`unknown parameter \\"(\w+)\\"`).FindStringSubmatch(want)[1]
	resp := get(t, p.URL+"/events?"+param+"=videos/abc123")
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusBadRequest || strings.TrimSpace(string(body)) != want {
		t.Errorf("GET /events?%s=: %d %s, the README shows 400 %s", param, resp.StatusCode, body, want)
	}
}

// jwtPgsse starts pgsse verifying HS256 tokens with testSecret only, watching
// a database holding video abc123.
func jwtPgsse(t *testing.T) *proc {
	t.Helper()
	dbURL := dbtest.New(t)
	dbtest.InsertVideo(t, dbtest.Open(t, dbURL), "abc123")
	return startPgsse(t, dbURL, "PGSSE_AUTH_MODE=jwt", "PGSSE_JWT_SECRET="+testSecret)
}

// TestDocs_TokenClaims: the README's claims, with exp filled in, grant the
// topics they list and nothing else.
func TestDocs_TokenClaims(t *testing.T) {
	p := jwtPgsse(t)
	text := strings.ReplaceAll(doctest.Find(t, "README.md", `"exp": <now + 900>`).Text, "<now + 900>", fmt.Sprint(time.Now().Unix()+900))
	var c jwt.MapClaims
	if err := json.Unmarshal([]byte(text), &c); err != nil {
		t.Fatalf("the README's claims: %v", err)
	}
	token := hs(t, c)
	for topic, want := range map[string]int{"videos/abc123": 200, "videos/def456": 200, "videos/other": 403} {
		resp := get(t, p.URL+"/events?topic="+topic, "Authorization", "Bearer "+token)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s with the README's claims: %d, want %d", topic, resp.StatusCode, want)
		}
	}
}

// TestDocs_ShellToken runs docs/security.md's openssl recipe: its token opens
// the stream.
func TestDocs_ShellToken(t *testing.T) {
	p := jwtPgsse(t)
	script := strings.NewReplacer("http://localhost:8080", p.URL, "curl -N", "curl -sN --max-time 3").
		Replace(doctest.Find(t, "docs/security.md", "openssl dgst -sha256 -hmac").Text)
	cmd := exec.Command("bash", "-c", script)
	cmd.Env = append(os.Environ(), "PGSSE_JWT_SECRET="+testSecret)
	out, _ := cmd.CombinedOutput() // curl ends at --max-time
	if !strings.Contains(string(out), "event: video.status") {
		t.Errorf("the recipe's stream printed %q, want the video's snapshot", out)
	}
}

// TestDocs_AddingAKind applies the README's example migration for a new kind
// (its up part, as written) and streams what it publishes, untyped.
func TestDocs_AddingAKind(t *testing.T) {
	dbURL := dbtest.New(t)
	sqlDB := dbtest.Open(t, dbURL)
	dbtest.Exec(t, sqlDB, `CREATE TABLE thumbnails (video_id text NOT NULL, url text NOT NULL)`)
	migration := doctest.Find(t, "README.md", "CREATE FUNCTION pgsse.thumbnail_ready()").Text
	up, _, ok := strings.Cut(migration, "-- migrate:down")
	if !ok {
		t.Fatal("the example migration has no down part")
	}
	dbtest.Exec(t, sqlDB, up)
	p := startPgsse(t, dbURL)
	s := open(t, p.URL+"/events?topic=videos/abc123", "")
	waitFor(t, func() bool { return scrape(t, p.URL)["pgsse_streams_open"] == 1 }) // a fresh subscription gets what comes after it
	dbtest.Exec(t, sqlDB, `INSERT INTO thumbnails VALUES ('abc123', 'https://cdn.example.com/abc123.jpg')`)
	got := s.next(t)
	var data map[string]string
	_ = json.Unmarshal(got.env.Data, &data)
	if got.Event.Type != "thumbnail.ready" || data["video_id"] != "abc123" || data["url"] != "https://cdn.example.com/abc123.jpg" {
		t.Errorf("got %s %s, want thumbnail.ready with the row's video_id and url", got.Event.Type, got.env.Data)
	}
	dbtest.Exec(t, sqlDB, strings.SplitN(migration, "-- migrate:down", 2)[1])
}
