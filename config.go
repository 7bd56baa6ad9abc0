package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"pgsse/auth"
	"pgsse/db"
	"pgsse/hub"
	"pgsse/stream"
)

// config is every setting, from the environment, overridden by flags.
type config struct {
	DatabaseURL       string
	ListenDatabaseURL string
	VideosSchema      string
	DBTimeout         time.Duration
	Addr              string
	Heartbeat         time.Duration
	Retention         time.Duration
	Drain             time.Duration
	MaxTopics         int
	Queue             int
	WriteTimeout      time.Duration
	PollInterval      time.Duration
	LogLevel          string
	LogFormat         string
	CORSOrigins       []string
	Demo              bool

	AuthMode       string // "jwt" or "none"
	JWTSecret      secret
	JWTKeyFile     string
	JWTIssuer      string
	JWTAudience    string
	JWTTopicsClaim string
	JWTCookie      string
	JWTLeeway      time.Duration
	AllowQuery     bool

	MaxStreams     int
	MaxPerIP       int
	MaxPerSubject  int
	ConnectRate    float64
	ConnectBurst   int
	TrustedProxies []*net.IPNet
	MaxHeaderBytes int
	AdminAddr      string
	Migrate        bool

	UnknownVariables []string // PGSSE_ variables no setting reads, not misspellings of one: warned about
}

// secret is a flag value that never prints itself (not in --help, not in logs).
type secret string

func (s *secret) String() string {
	if s == nil || *s == "" {
		return ""
	}
	return "(set)"
}

func (s *secret) Set(v string) error { *s = secret(v); return nil }

// flags binds each setting to a flag whose default comes from its environment
// variable, collecting malformed values.
type flags struct {
	fs    *flag.FlagSet
	errs  []error
	known map[string]bool // the variables bound so far
}

func (f *flags) env(name string) (string, bool) {
	if f.known == nil {
		f.known = map[string]bool{}
	}
	f.known[name] = true
	return os.LookupEnv(name)
}

// typoDistance: an unknown PGSSE_ variable this close to a known one (in edits)
// is taken for a misspelling of it and refused; a farther one is some other
// tool's (a test harness, a wrapper) and only warned about.
const typoDistance = 3

// unknownVariables refuses PGSSE_ variables no setting reads that look like a
// misspelt setting, which would otherwise be ignored in silence, and returns the
// others. Kubernetes' service links for a Service named pgsse
// (PGSSE_SERVICE_HOST, PGSSE_PORT, PGSSE_PORT_8080_TCP…) are not ours and pass.
func (f *flags) unknownVariables() (others []string) {
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, "PGSSE_") || f.known[name] || strings.HasPrefix(name, "PGSSE_SERVICE_") ||
			name == "PGSSE_PORT" || strings.HasPrefix(name, "PGSSE_PORT_") {
			continue
		}
		if near, d := f.nearest(name); d <= typoDistance {
			f.errs = append(f.errs, fmt.Errorf("unknown variable $%s: did you mean $%s?", name, near))
		} else {
			others = append(others, name)
		}
	}
	return others
}

// nearest returns the known variable with the smallest edit distance to name,
// and the distance.
func (f *flags) nearest(name string) (string, int) {
	best, bestDist := "", -1
	for k := range f.known {
		if d := editDistance(name, k); bestDist < 0 || d < bestDist || (d == bestDist && k < best) {
			best, bestDist = k, d
		}
	}
	return best, bestDist
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

func (f *flags) str(p *string, name, env, def, usage string) {
	if v, ok := f.env(env); ok {
		def = v
	}
	f.fs.StringVar(p, name, def, usage+" ($"+env+")")
}

func (f *flags) secret(p *secret, name, env, usage string) {
	if v, ok := f.env(env); ok {
		*p = secret(v)
	}
	f.fs.Var(p, name, usage+" ($"+env+"; prefer the variable: flags show in ps)")
}

func (f *flags) dur(p *time.Duration, name, env string, def time.Duration, usage string) {
	if v, ok := f.env(env); ok {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			f.errs = append(f.errs, fmt.Errorf("$%s=%q: want a duration such as 15s", env, v))
		}
		def = d
	}
	f.fs.DurationVar(p, name, def, usage+" ($"+env+")")
}

func (f *flags) num(p *int, name, env string, def int, usage string) {
	if v, ok := f.env(env); ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			f.errs = append(f.errs, fmt.Errorf("$%s=%q: want a non-negative integer", env, v))
		}
		def = n
	}
	f.fs.IntVar(p, name, def, usage+" ($"+env+")")
}

func (f *flags) float(p *float64, name, env string, def float64, usage string) {
	if v, ok := f.env(env); ok {
		n, err := strconv.ParseFloat(v, 64)
		if err != nil || n < 0 {
			f.errs = append(f.errs, fmt.Errorf("$%s=%q: want a non-negative number", env, v))
		}
		def = n
	}
	f.fs.Float64Var(p, name, def, usage+" ($"+env+")")
}

func (f *flags) boolean(p *bool, name, env string, def bool, usage string) {
	if v, ok := f.env(env); ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			f.errs = append(f.errs, fmt.Errorf("$%s=%q: want true or false", env, v))
		}
		def = b
	}
	f.fs.BoolVar(p, name, def, usage+" ($"+env+")")
}

// commands are pgsse's subcommands, one line each in the help.
const commands = `usage: pgsse [command] [flags]

  serve        stream events (the default)
  migrate      apply the database migrations and exit
  demo         simulate uploads and processing workers, for the demo page
  healthcheck  exit 0 if this container's pgsse answers /readyz with 200
  version      print the version and exit
  help         print this help (pgsse help <command>: the same, for that command)

Every flag can also be set by the environment variable named after it.

`

// helpRequested is parseConfig's answer to -h or --help: the help to print.
type helpRequested struct{ text string }

func (h *helpRequested) Error() string { return "help requested" }

// usage is the help for fs's command: the commands, then every flag.
func usage(fs *flag.FlagSet) string {
	var b strings.Builder
	b.WriteString(commands)
	fs.SetOutput(&b)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
	return b.String()
}

func parseConfig(cmd string, args []string) (config, error) {
	fs := flag.NewFlagSet("pgsse "+cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // help is the caller's to print (on stdout); errors are returned
	var cfg config
	var origins, proxies string
	f := &flags{fs: fs}
	f.str(&cfg.DatabaseURL, "database-url", "DATABASE_URL", "", "PostgreSQL URL, e.g. postgres://user@host/db?sslmode=disable")
	f.str(&cfg.ListenDatabaseURL, "listen-database-url", "PGSSE_LISTEN_DATABASE_URL", "", "PostgreSQL URL for the LISTEN connection, when DATABASE_URL is a transaction-mode pooler (default: DATABASE_URL)")
	f.str(&cfg.VideosSchema, "videos-schema", "PGSSE_VIDEOS_SCHEMA", db.DefaultVideosSchema, "schema of the application's videos table (never found through search_path)")
	f.dur(&cfg.DBTimeout, "db-timeout", "PGSSE_DB_TIMEOUT", db.DefaultTimeout, "a database connection that answers nothing this long is given up (statements: half of it)")
	f.str(&cfg.Addr, "addr", "PGSSE_ADDR", ":8080", "HTTP listen address")
	f.dur(&cfg.Heartbeat, "heartbeat", "PGSSE_HEARTBEAT", stream.DefaultHeartbeat, "idle time before a heartbeat comment; keep it under the proxies' 60s")
	f.dur(&cfg.Retention, "retention", "PGSSE_RETENTION", 24*time.Hour, "how long events stay in the log for resuming clients")
	f.dur(&cfg.Drain, "drain", "PGSSE_DRAIN", 10*time.Second, "on SIGTERM, window over which open streams are closed")
	f.num(&cfg.MaxTopics, "max-topics", "PGSSE_MAX_TOPICS", stream.DefaultMaxTopics, "topics per stream")
	f.num(&cfg.Queue, "queue", "PGSSE_QUEUE", hub.DefaultQueueLen, "events queued per stream before a slow client is dropped")
	f.dur(&cfg.WriteTimeout, "write-timeout", "PGSSE_WRITE_TIMEOUT", stream.DefaultWriteTimeout, "a write slower than this drops the stream")
	f.dur(&cfg.PollInterval, "poll-interval", "PGSSE_POLL_INTERVAL", 2*time.Second, "safety poll of the log when no notification arrives")
	f.str(&cfg.LogLevel, "log-level", "PGSSE_LOG_LEVEL", "info", "debug, info, warn or error")
	f.str(&cfg.LogFormat, "log-format", "PGSSE_LOG_FORMAT", "", "json or console (default: console on a terminal, json otherwise)")
	f.str(&origins, "cors-origins", "PGSSE_CORS_ORIGINS", "", "comma-separated origins allowed to stream cross-origin with credentials, e.g. https://app.example.com")
	f.boolean(&cfg.Demo, "demo", "PGSSE_DEMO", false, "serve the live demo page at /")

	f.str(&cfg.AuthMode, "auth-mode", "PGSSE_AUTH_MODE", "jwt", "jwt, or none for local development (anyone may watch anything)")
	f.secret(&cfg.JWTSecret, "jwt-secret", "PGSSE_JWT_SECRET", "HMAC secret for HS256/384/512 tokens, at least 32 bytes")
	f.str(&cfg.JWTKeyFile, "jwt-key-file", "PGSSE_JWT_KEY_FILE", "", "PEM public key(s) or JWKS file for RS*/PS*/ES*/EdDSA tokens; reloaded when it changes")
	f.str(&cfg.JWTIssuer, "jwt-issuer", "PGSSE_JWT_ISSUER", "", "required iss, when set")
	f.str(&cfg.JWTAudience, "jwt-audience", "PGSSE_JWT_AUDIENCE", "", "required aud, when set")
	f.str(&cfg.JWTTopicsClaim, "jwt-topics-claim", "PGSSE_JWT_TOPICS_CLAIM", auth.DefaultTopicsClaim, "dotted path of the claim listing the topic patterns a token grants")
	f.str(&cfg.JWTCookie, "jwt-cookie", "PGSSE_JWT_COOKIE", auth.DefaultCookie, "cookie that may carry the token")
	f.dur(&cfg.JWTLeeway, "jwt-leeway", "PGSSE_JWT_LEEWAY", 30*time.Second, "clock skew allowed for nbf and iat")
	f.boolean(&cfg.AllowQuery, "allow-query-token", "PGSSE_ALLOW_QUERY_TOKEN", false, "accept ?access_token= (it ends up in proxies' access logs)")

	f.num(&cfg.MaxStreams, "max-streams", "PGSSE_MAX_STREAMS", 20000, "streams in this process; past it new ones get 503 (0: no limit)")
	f.num(&cfg.MaxPerIP, "max-streams-per-ip", "PGSSE_MAX_STREAMS_PER_IP", 100, "concurrent streams per client IP (0: no limit)")
	f.num(&cfg.MaxPerSubject, "max-streams-per-subject", "PGSSE_MAX_STREAMS_PER_SUBJECT", 20, "concurrent streams per token subject (0: no limit)")
	f.float(&cfg.ConnectRate, "connect-rate", "PGSSE_CONNECT_RATE", 10, "new streams per second per client IP (0: no limit)")
	f.num(&cfg.ConnectBurst, "connect-burst", "PGSSE_CONNECT_BURST", 20, "new streams a client IP may open at once before the rate applies")
	f.str(&proxies, "trusted-proxies", "PGSSE_TRUSTED_PROXIES", "", "comma-separated CIDRs of proxies whose X-Forwarded-For is believed")
	f.num(&cfg.MaxHeaderBytes, "max-header-bytes", "PGSSE_MAX_HEADER_BYTES", 16<<10, "request line and headers, in bytes")
	f.str(&cfg.AdminAddr, "admin-addr", "PGSSE_ADMIN_ADDR", "", "serve /metrics (and /healthz, /readyz) here instead of on the main address, e.g. :9090")
	f.boolean(&cfg.Migrate, "migrate", "PGSSE_MIGRATE", true, "apply migrations at start; false: wait for 'pgsse migrate' to have done it")

	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return cfg, &helpRequested{usage(fs)}
		}
		return cfg, fmt.Errorf("%w (pgsse help lists the commands and flags)", err)
	}
	cfg.UnknownVariables = f.unknownVariables()
	errs := f.errs
	if fs.NArg() > 0 {
		errs = append(errs, fmt.Errorf("unexpected argument %q", fs.Arg(0)))
	}
	if cfg.DatabaseURL == "" && cmd != "healthcheck" {
		errs = append(errs, errors.New("no database: set DATABASE_URL or --database-url"))
	}
	if cfg.ListenDatabaseURL == "" {
		cfg.ListenDatabaseURL = cfg.DatabaseURL
	} else if err := checkDatabaseURL("PGSSE_LISTEN_DATABASE_URL", cfg.ListenDatabaseURL); err != nil {
		errs = append(errs, err)
	}
	if err := checkDatabaseURL("DATABASE_URL", cfg.DatabaseURL); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, checkRanges(cfg)...)
	if cfg.VideosSchema == "" {
		errs = append(errs, errors.New("PGSSE_VIDEOS_SCHEMA is empty: name the schema of the videos table, e.g. public"))
	}
	var err error
	if cfg.CORSOrigins, err = parseOrigins(origins); err != nil {
		errs = append(errs, err)
	}
	if cfg.TrustedProxies, err = parseCIDRs(proxies); err != nil {
		errs = append(errs, err)
	}
	switch cfg.AuthMode {
	case "none":
	case "jwt":
		if cmd == "serve" && cfg.JWTSecret == "" && cfg.JWTKeyFile == "" {
			errs = append(errs, errors.New("PGSSE_AUTH_MODE=jwt needs a key: set PGSSE_JWT_SECRET or PGSSE_JWT_KEY_FILE (or PGSSE_AUTH_MODE=none for local development only)"))
		}
	default:
		errs = append(errs, fmt.Errorf("$PGSSE_AUTH_MODE=%q: use jwt or none", cfg.AuthMode))
	}
	return cfg, errors.Join(errs...)
}

// parseOrigins validates a comma-separated list of origins. A wildcard is
// refused: streams carry credentials, and "*" with credentials would let any
// site read them.
func parseOrigins(list string) ([]string, error) {
	var out []string
	for _, o := range strings.Split(list, ",") {
		o = strings.TrimSpace(o)
		if o == "" {
			continue
		}
		u, err := url.Parse(o)
		if o == "*" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			return nil, fmt.Errorf("$PGSSE_CORS_ORIGINS: %q is not an origin such as https://app.example.com (no wildcard, path or query)", o)
		}
		out = append(out, u.Scheme+"://"+u.Host)
	}
	return out, nil
}

// parseCIDRs parses a comma-separated list of CIDRs or single addresses.
func parseCIDRs(list string) ([]*net.IPNet, error) {
	var out []*net.IPNet
	for _, s := range strings.Split(list, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if !strings.Contains(s, "/") {
			if ip := net.ParseIP(s); ip != nil && ip.To4() != nil {
				s += "/32"
			} else {
				s += "/128"
			}
		}
		_, n, err := net.ParseCIDR(s)
		if err != nil {
			return nil, fmt.Errorf("$PGSSE_TRUSTED_PROXIES: %q is not a CIDR such as 10.0.0.0/8", s)
		}
		out = append(out, n)
	}
	return out, nil
}

// checkDatabaseURL refuses a postgres:// URL that does not parse, without
// quoting it: url.Parse's error carries the whole URL, password included, and
// the usual cause is a password with a reserved character left as it is.
func checkDatabaseURL(variable, value string) error {
	if !strings.HasPrefix(value, "postgres://") && !strings.HasPrefix(value, "postgresql://") {
		return nil // empty, or a keyword/value connection string: lib/pq parses it
	}
	if _, err := url.Parse(value); err != nil {
		return fmt.Errorf("$%s does not parse as a URL: percent-encode reserved characters in the user name and password "+
			"(%% as %%25, @ as %%40, # as %%23, / as %%2F, : as %%3A, ? as %%3F, space as %%20)", variable)
	}
	return nil
}

// minRetention keeps a mistyped retention from emptying the log: the pruner
// would delete every event older than it a minute later.
const minRetention = time.Minute

// minHeaderBytes: below it ordinary browser requests would not fit.
const minHeaderBytes = 4096

// minDBTimeout: below it ordinary queries under load would be given up.
const minDBTimeout = 2 * time.Second

// maxHeartbeat: proxies commonly drop a connection idle for 60 s.
const maxHeartbeat = 60 * time.Second

// checkRanges refuses values that make no sense. Zero means something only where
// the README says so (the poll interval, the drain, the stream limits).
func checkRanges(cfg config) []error {
	var errs []error
	if cfg.Addr == "" {
		errs = append(errs, errors.New("$PGSSE_ADDR is empty: give a listen address such as :8080"))
	}
	if cfg.Retention < minRetention {
		errs = append(errs, fmt.Errorf("$PGSSE_RETENTION=%v: at least %v (the pruner deletes every event older than it)", cfg.Retention, minRetention))
	}
	if cfg.Heartbeat <= 0 || cfg.Heartbeat >= maxHeartbeat {
		errs = append(errs, fmt.Errorf("$PGSSE_HEARTBEAT=%v: above 0 and under %v (proxies drop connections idle for a minute)", cfg.Heartbeat, maxHeartbeat))
	}
	if cfg.WriteTimeout <= 0 {
		errs = append(errs, fmt.Errorf("$PGSSE_WRITE_TIMEOUT=%v: above 0", cfg.WriteTimeout))
	}
	if cfg.DBTimeout < minDBTimeout {
		errs = append(errs, fmt.Errorf("$PGSSE_DB_TIMEOUT=%v: at least %v (pgsse's statements get half of it)", cfg.DBTimeout, minDBTimeout))
	}
	if cfg.Queue < 1 {
		errs = append(errs, fmt.Errorf("$PGSSE_QUEUE=%d: at least 1 event per stream", cfg.Queue))
	}
	if cfg.MaxHeaderBytes < minHeaderBytes {
		errs = append(errs, fmt.Errorf("$PGSSE_MAX_HEADER_BYTES=%d: at least %d", cfg.MaxHeaderBytes, minHeaderBytes))
	}
	if cfg.MaxTopics < 1 {
		errs = append(errs, fmt.Errorf("$PGSSE_MAX_TOPICS=%d: at least 1 topic per stream", cfg.MaxTopics))
	}
	return errs
}
