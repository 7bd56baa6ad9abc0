package db

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/lib/pq"
)

// connector opens the pool's connections through a Dialer and, when a statement
// timeout is asked for, with statement_timeout as a startup parameter: one
// setting for the session's whole life, with no extra round trip. A pooler
// (PgBouncer) refuses startup parameters it does not track; then the pool
// connects without it from then on (set statement_timeout on pgsse's role
// instead: docs/database.md).
type connector struct {
	withTimeout, plain *pq.Connector
	refused            atomic.Bool // the server refused the startup parameter
}

func newConnector(url string, d *Dialer, statementTimeout time.Duration) (driver.Connector, error) {
	plain, err := pq.NewConnector(url)
	if err != nil {
		return nil, fmt.Errorf("open database: %w", redactParseError(err))
	}
	plain.Dialer(d)
	if statementTimeout <= 0 || strings.Contains(url, "statement_timeout") {
		return plain, nil
	}
	sep := " "
	if strings.HasPrefix(url, "postgres://") || strings.HasPrefix(url, "postgresql://") {
		sep = "&"
		if !strings.Contains(url, "?") {
			sep = "?"
		}
	}
	withTimeout, err := pq.NewConnector(fmt.Sprintf("%s%sstatement_timeout=%d", url, sep, statementTimeout.Milliseconds()))
	if err != nil {
		return nil, fmt.Errorf("open database: %w", redactParseError(err))
	}
	withTimeout.Dialer(d)
	return &connector{withTimeout: withTimeout, plain: plain}, nil
}

// Connect implements driver.Connector.
func (c *connector) Connect(ctx context.Context) (driver.Conn, error) {
	if !c.refused.Load() {
		cn, err := c.withTimeout.Connect(ctx)
		if !refusedStartupParameter(err) {
			return cn, err
		}
		c.refused.Store(true)
	}
	return c.plain.Connect(ctx)
}

// Driver implements driver.Connector.
func (c *connector) Driver() driver.Driver { return c.plain.Driver() }

// refusedStartupParameter: PgBouncer's "unsupported startup parameter".
func refusedStartupParameter(err error) bool {
	var pqErr *pq.Error
	return errors.As(err, &pqErr) && strings.Contains(pqErr.Message, "unsupported startup parameter")
}

// redactParseError keeps lib/pq's reason but not the URL it may quote.
func redactParseError(err error) error {
	if strings.Contains(err.Error(), "://") || strings.Contains(err.Error(), "password") {
		return errBadURL
	}
	return err
}
