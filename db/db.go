// Package db is pgsse's only door to PostgreSQL: the connection pool, the
// migration runner, and every SQL query the service runs. Queries return plain
// values and event.Raw rows; decoding and fan-out are left to listener and sse.
package db

import (
	"database/sql"
	"fmt"
	"time"

	_ "github.com/lib/pq" // registers the "postgres" driver
)

// Store runs pgsse's queries on a connection pool.
type Store struct {
	url string
	db  *sql.DB
}

// DefaultMaxConns bounds a Store's pool: snapshots and replays are short, and a
// small pool bounds the load one replica puts on Postgres however many clients
// it serves (a herd of reconnecting clients queues here, not in the database).
const DefaultMaxConns = 16

// Open prepares a pool of at most maxConns connections (DefaultMaxConns if
// zero) to the database at url. It does not wait for the database: pgsse starts,
// and keeps serving, while Postgres is away.
func Open(url string, maxConns int) (*Store, error) {
	if maxConns <= 0 {
		maxConns = DefaultMaxConns
	}
	sqlDB, err := sql.Open("postgres", url)
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	sqlDB.SetMaxOpenConns(maxConns)
	sqlDB.SetMaxIdleConns(maxConns)
	sqlDB.SetConnMaxIdleTime(5 * time.Minute)
	return &Store{url: url, db: sqlDB}, nil
}

// Close closes the pool.
func (s *Store) Close() error { return s.db.Close() }
