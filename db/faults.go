package db

import (
	"errors"
	"strings"
	"time"

	"github.com/lib/pq"
)

// Fault says what a failed database call means for the operator. An outage
// (the connection is down, the server is starting or shutting down, out of
// connection slots) passes by itself and is waited out; anything else is a
// fault to fix — a wrong password, a missing database, a revoked privilege, a
// renamed column, a read-only database — and is retried too, but reported as an
// error with its SQLSTATE and a hint.
type Fault struct {
	SQLState string // empty for errors that carry none (network, driver)
	Outage   bool
	Hint     string
}

// MaxRetryBackoff caps the wait between retries of a failed database call, so
// that service resumes within about that long after an outage ends.
const MaxRetryBackoff = 2 * time.Second

// Classify returns what err means; see Fault.
func Classify(err error) Fault {
	var pqErr *pq.Error
	if !errors.As(err, &pqErr) {
		return Fault{Outage: true} // refused, reset, timed out, EOF: the network or the server is away
	}
	code := string(pqErr.Code)
	f := Fault{SQLState: code, Outage: isOutage(code), Hint: hints[code]}
	if f.Hint == "" && !f.Outage {
		f.Hint = classHints[code[:2]]
	}
	return f
}

// isOutage: connection exceptions (08), operator intervention that ends
// sessions or refuses them while starting or stopping (57P01-57P05), and no
// connection slots left (53300).
func isOutage(code string) bool {
	return strings.HasPrefix(code, "08") || code == "53300" ||
		code == "57P01" || code == "57P02" || code == "57P03" || code == "57P04" || code == "57P05"
}

var hints = map[string]string{
	"28P01": "password authentication failed: check the user and password in the database URL",
	"28000": "the server refuses this role or address: check pg_hba.conf and the user in the database URL",
	"3D000": "the database named in the database URL does not exist",
	"42501": "pgsse's role lacks a privilege: grant what docs/security.md lists",
	"42P01": "a table pgsse reads is missing: run pgsse migrate, or check PGSSE_VIDEOS_SCHEMA",
	"42703": "a column pgsse reads is missing: the videos table needs id, processing_status and updated_at",
	"42883": "a function pgsse calls is missing: run pgsse migrate",
	"25006": "the database is read-only: pgsse writes pgsse.events (sequencing), so it needs the primary",
	"57014": "a statement ran past its statement_timeout (half of PGSSE_DB_TIMEOUT): a lock held on pgsse's tables, or a server too loaded to answer",
}

var classHints = map[string]string{
	"28": "the server refused pgsse's credentials",
	"42": "a query failed on the schema: run pgsse migrate, or check the table names and privileges",
}
