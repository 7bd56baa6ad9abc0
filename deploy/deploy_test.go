// Package deploy_test checks the container image and the Kubernetes manifests
// without a container engine or a cluster: the Dockerfile is parsed with
// BuildKit's parser and its build command run here as written; the kustomize
// output is decoded strictly into the official API types and cross-checked
// against each other and against the real binary.
package deploy_test

import (
	"bytes"
	"debug/elf"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/buildkit/frontend/dockerfile/parser"

	"pgsse/internal/dbtest"
	"pgsse/internal/testbin"
)

var (
	root = func() string { d, _ := filepath.Abs(".."); return d }()
	// scratch outlives single tests: the binary built there is shared.
	scratch string
)

func TestMain(m *testing.M) {
	var err error
	if scratch, err = os.MkdirTemp("", "pgsse-deploy-"); err != nil {
		panic(err)
	}
	code := m.Run()
	os.RemoveAll(scratch)
	testbin.Remove()
	os.Exit(code)
}

// stage is one FROM … of the Dockerfile with its instructions.
type stage struct {
	from, name   string
	instructions []*parser.Node
}

func (s stage) all(cmd string) []*parser.Node {
	var out []*parser.Node
	for _, n := range s.instructions {
		if strings.EqualFold(n.Value, cmd) {
			out = append(out, n)
		}
	}
	return out
}

func args(n *parser.Node) []string {
	var out []string
	for a := n.Next; a != nil; a = a.Next {
		out = append(out, a.Value)
	}
	return out
}

func parseDockerfile(t *testing.T) []stage {
	t.Helper()
	f, err := os.Open(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := parser.Parse(f)
	if err != nil {
		t.Fatal(err)
	}
	var stages []stage
	for _, n := range res.AST.Children {
		if strings.EqualFold(n.Value, "from") {
			a := args(n)
			s := stage{from: a[0]}
			if len(a) == 3 && strings.EqualFold(a[1], "as") {
				s.name = a[2]
			}
			stages = append(stages, s)
			continue
		}
		if len(stages) == 0 {
			if !strings.EqualFold(n.Value, "arg") {
				t.Fatalf("%s before the first FROM", n.Original)
			}
			continue
		}
		stages[len(stages)-1].instructions = append(stages[len(stages)-1].instructions, n)
	}
	return stages
}

func TestDockerfile(t *testing.T) {
	stages := parseDockerfile(t)
	if len(stages) < 2 {
		t.Fatalf("%d stages, want a multi-stage build", len(stages))
	}
	build, final := stages[0], stages[len(stages)-1]
	if !strings.HasPrefix(build.from, "golang:") || !strings.ContainsAny(strings.TrimPrefix(build.from, "golang:"), "0123456789") {
		t.Errorf("builder %q: want a pinned golang image", build.from)
	}
	if !strings.HasPrefix(final.from, "gcr.io/distroless/static") {
		t.Errorf("final stage %q: want distroless static", final.from)
	}
	if runs := final.all("run"); len(runs) > 0 {
		t.Errorf("the final stage runs %q: it must need no shell", runs[0].Original)
	}
	users := final.all("user")
	if len(users) == 0 {
		t.Fatal("the final stage sets no USER")
	}
	if u := strings.Split(args(users[len(users)-1])[0], ":")[0]; u == "root" || u == "0" || u == "" {
		t.Errorf("final USER %q, want non-root", u)
	}
	if copies := final.all("copy"); len(copies) != 1 || !strings.Contains(strings.Join(copies[0].Flags, " "), "--from=build") {
		t.Errorf("the final stage should copy only the binary from the build stage")
	}
	checks := map[string]func(n *parser.Node) bool{
		"expose":      func(n *parser.Node) bool { return args(n)[0] == "8080" }, // the default of PGSSE_ADDR
		"stopsignal":  func(n *parser.Node) bool { return args(n)[0] == "SIGTERM" },
		"entrypoint":  func(n *parser.Node) bool { return n.Attributes["json"] && strings.Join(args(n), " ") == "/pgsse" },
		"healthcheck": func(n *parser.Node) bool { return strings.Contains(n.Original, `["/pgsse", "healthcheck"]`) },
	}
	for cmd, ok := range checks {
		ns := final.all(cmd)
		if len(ns) != 1 || !ok(ns[0]) {
			t.Errorf("final stage %s: %v", strings.ToUpper(cmd), ns)
		}
	}
}

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
	buildOut  []byte
)

// dockerfileBinary runs the Dockerfile's build command, as written, in a copy of the
// source tree, and returns the binary it made.
func dockerfileBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		var cmd string
		for _, n := range parseDockerfile(t)[0].all("run") {
			if strings.Contains(n.Original, "go build") {
				cmd = strings.Join(args(n), " ")
			}
		}
		if cmd == "" {
			buildErr = os.ErrNotExist
			return
		}
		src := filepath.Join(scratch, "src")
		if buildErr = os.Mkdir(src, 0o755); buildErr != nil {
			return
		}
		// The build context: what git tracks or would track (the .gitignore keeps
		// out what .dockerignore does).
		cp := exec.Command("sh", "-c", "git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "+src)
		cp.Dir = root
		if out, err := cp.CombinedOutput(); err != nil {
			buildErr, buildOut = err, out
			return
		}
		run := exec.Command("sh", "-c", cmd)
		run.Dir = src
		run.Env = append(os.Environ(), "VERSION=v0.0.0-test")
		buildOut, buildErr = run.CombinedOutput()
		binPath = filepath.Join(src, "bin", "pgsse")
	})
	if buildErr != nil {
		t.Fatalf("the Dockerfile's build command: %v\n%s", buildErr, buildOut)
	}
	return binPath
}

// TestDockerfile_Build: the builder stage's command makes a static binary that
// starts and answers /healthz with its stamped version.
func TestDockerfile_Build(t *testing.T) {
	bin := dockerfileBinary(t)
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("the binary is dynamically linked (%v)", p.Type)
		}
	}
	f.Close()
	if ldd, err := exec.LookPath("ldd"); err == nil {
		out, _ := exec.Command(ldd, bin).CombinedOutput()
		if !strings.Contains(string(out), "not a dynamic executable") && !strings.Contains(string(out), "statically linked") {
			t.Errorf("ldd says: %s", out)
		}
	}
	p := startBinary(t, bin, nil)
	body := mustGet(t, p+"/healthz", http.StatusOK)
	if !strings.Contains(body, `"version":"v0.0.0-test"`) {
		t.Errorf("/healthz = %s, want the stamped version", body)
	}
}

// startBinary runs bin serve against a fresh database with env added (no
// authentication unless env says otherwise), waits
// for /readyz and returns its base URL.
func startBinary(t *testing.T, bin string, env []string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(bin, "serve")
	// env comes last: where it repeats a variable, its value wins.
	cmd.Env = append(append(os.Environ(), "DATABASE_URL="+dbtest.New(t), "PGSSE_ADDR="+addr, "PGSSE_AUTH_MODE=none"), env...)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	base := "http://" + addr
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(base + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return base
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	cmd.Process.Kill()
	cmd.Wait()
	t.Fatalf("not ready in 30s:\n%s", logs.String())
	return ""
}

func mustGet(t *testing.T, url string, status int) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	if resp.StatusCode != status {
		t.Fatalf("GET %s = %d, want %d: %s", url, resp.StatusCode, status, b.String())
	}
	return b.String()
}
