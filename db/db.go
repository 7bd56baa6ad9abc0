// Package db is pgsse's only door to PostgreSQL: the connection pool, the
// migration runner, and every SQL query the service runs. Queries return plain
// values and event.Raw rows; decoding and fan-out are left to listener and sse.
package db

import (
	"database/sql"
	"errors"
	neturl "net/url"
	"strings"
	"time"

	"github.com/lib/pq" // also registers the "postgres" driver
)

// Store runs pgsse's queries on a connection pool.
type Store struct {
	url          string
	timeout      time.Duration // see Timeout; zero: calls may wait on the server
	db           *sql.DB
	videosSchema string
	videos       string // the application's table, quoted and schema-qualified
}

// DefaultVideosSchema is the schema of the application's videos table unless
// configured otherwise.
const DefaultVideosSchema = "public"

// Option configures a Store.
type Option func(*Store)

// VideosSchema names the schema of the application's videos table (default
// DefaultVideosSchema). pgsse never finds the table through search_path.
func VideosSchema(schema string) Option {
	return func(s *Store) {
		s.videosSchema = schema
		s.videos = pq.QuoteIdentifier(schema) + ".videos"
	}
}

// Timeout bounds every call on the pool's connections: a read or write that
// makes no progress for d fails (see Dialer), and each statement carries a
// server-side statement_timeout of half that, so that a statement stuck on a
// lock is cancelled by the server, cleanly, before the connection gives up.
// Without it (migrations, whose statements may rightly wait on the
// application's locks) only the kernel's keepalives watch the connection.
func Timeout(d time.Duration) Option {
	return func(s *Store) { s.timeout = d }
}

// DefaultMaxConns bounds a Store's pool: snapshots and replays are short, and a
// small pool bounds the load one replica puts on Postgres however many clients
// it serves (a herd of reconnecting clients queues here, not in the database).
const DefaultMaxConns = 16

// Open prepares a pool of at most maxConns connections (DefaultMaxConns if
// zero) to the database at url. It does not wait for the database: pgsse starts,
// and keeps serving, while Postgres is away.
func Open(url string, maxConns int, opts ...Option) (*Store, error) {
	if maxConns <= 0 {
		maxConns = DefaultMaxConns
	}
	url, err := poolerSafe(url)
	if err != nil {
		return nil, err
	}
	s := &Store{url: url}
	VideosSchema(DefaultVideosSchema)(s)
	for _, opt := range opts {
		opt(s)
	}
	c, err := newConnector(url, NewDialer(s.timeout, s.timeout > 0), s.timeout/2)
	if err != nil {
		return nil, err
	}
	s.db = sql.OpenDB(c)
	s.db.SetMaxOpenConns(maxConns)
	s.db.SetMaxIdleConns(maxConns)
	s.db.SetConnMaxIdleTime(5 * time.Minute)
	return s, nil
}

// Close closes the pool.
func (s *Store) Close() error { return s.db.Close() }

// errBadURL stands for url.Parse's error, which quotes the URL, password and all.
var errBadURL = errors.New("open database: the database URL does not parse as a URL")

// poolerSafe turns on lib/pq's binary_parameters unless the URL sets it: a
// query with parameters then goes out as one Parse/Bind/Execute, instead of a
// Parse answered before the Bind, which a transaction-mode pooler (PgBouncer)
// may send to two different server connections ("unnamed prepared statement
// does not exist"). It also names the connections "pgsse" in
// pg_stat_activity unless the URL names them.
func poolerSafe(rawURL string) (string, error) {
	return withDefaults(rawURL, "binary_parameters", "yes", "fallback_application_name", ApplicationName)
}

// ApplicationName is what pgsse's pool connections are called in
// pg_stat_activity (ListenerApplicationName: its LISTEN connection), unless the
// URL sets application_name.
const (
	ApplicationName         = "pgsse"
	ListenerApplicationName = "pgsse-listener"
)

// ListenerURL is url with the LISTEN connection's fallback_application_name.
func ListenerURL(url string) (string, error) {
	return withDefaults(url, "fallback_application_name", ListenerApplicationName)
}

// withDefaults adds each key=value pair the URL does not set. Keyword/value
// connection strings get them appended.
func withDefaults(rawURL string, pairs ...string) (string, error) {
	if !strings.HasPrefix(rawURL, "postgres://") && !strings.HasPrefix(rawURL, "postgresql://") {
		for i := 0; i < len(pairs); i += 2 {
			if !strings.Contains(rawURL, pairs[i]+"=") {
				rawURL += " " + pairs[i] + "=" + pairs[i+1]
			}
		}
		return rawURL, nil
	}
	u, err := neturl.Parse(rawURL)
	if err != nil {
		return "", errBadURL
	}
	q := u.Query()
	for i := 0; i < len(pairs); i += 2 {
		if q.Get(pairs[i]) == "" {
			q.Set(pairs[i], pairs[i+1])
		}
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}
