package db_test

import (
	"testing"
	"time"

	"github.com/lib/pq"

	"pgsse/db"
	"pgsse/internal/dbtest"
)

// TestTimeout_StatementTimeout: a pool with a Timeout gives its sessions a
// server-side statement_timeout of half of it, so a stuck statement is
// cancelled by the server (57014) before the connection is given up.
func TestTimeout_StatementTimeout(t *testing.T) {
	s, err := db.Open(dbtest.New(t), 2, db.Timeout(3*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var setting string
	if err := s.SQLDB().QueryRow(`SHOW statement_timeout`).Scan(&setting); err != nil || setting != "1500ms" {
		t.Fatalf("statement_timeout = %q (%v), want 1500ms", setting, err)
	}
	_, err = s.SQLDB().Exec(`SELECT pg_sleep(2)`)
	if pqErr, ok := err.(*pq.Error); !ok || pqErr.Code != "57014" {
		t.Fatalf("a 2 s statement: %v, want 57014 (statement timeout)", err)
	}
}

// TestTimeout_ThroughTransactionPooler: PgBouncer refuses statement_timeout as
// a startup parameter; the pool connects without it.
func TestTimeout_ThroughTransactionPooler(t *testing.T) {
	bouncer := dbtest.NewPgBouncer(t)
	s, err := db.Open(bouncer.URL(dbtest.New(t)), 2, db.Timeout(3*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for range 3 {
		if _, err := s.SQLDB().Exec(`SELECT 1`); err != nil {
			t.Fatalf("through the pooler: %v", err)
		}
	}
}
