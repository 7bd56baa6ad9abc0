package db_test

import (
	"context"
	"errors"
	neturl "net/url"
	"testing"

	"pgsse/db"
	"pgsse/internal/dbtest"
)

// TestClassify: connection trouble is an outage; a wrong password, a missing
// database, a revoked privilege, a read-only database are faults, each with its
// SQLSTATE and a hint, all from a real server.
func TestClassify(t *testing.T) {
	url := dbtest.New(t)
	sqlDB := dbtest.Open(t, url)
	u, _ := neturl.Parse(url)

	ctx := context.Background()
	try := func(url string) error {
		s := mustOpen(t, url)
		_, err := s.Head(ctx)
		return err
	}
	missing := *u
	missing.Path = "/no_such_database"
	dbtest.Exec(t, sqlDB, `DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pgsse_nobody') THEN CREATE ROLE pgsse_nobody LOGIN; END IF; END $$`)
	nobody := *u
	nobody.User = neturl.User("pgsse_nobody")
	down := *u
	down.Host = "127.0.0.1:1"

	for _, tc := range []struct {
		name   string
		err    error
		outage bool
		code   string
	}{
		{"Refused", try(down.String()), true, ""},
		{"MissingDatabase", try(missing.String()), false, "3D000"},
		{"NoPrivilege", try(nobody.String()), false, "42501"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.err == nil {
				t.Fatal("no error")
			}
			f := db.Classify(tc.err)
			if f.Outage != tc.outage || f.SQLState != tc.code || (!f.Outage && f.Hint == "") {
				t.Errorf("Classify(%v) = %+v, want outage %v, SQLSTATE %q, a hint for faults", tc.err, f, tc.outage, tc.code)
			}
		})
	}
	if f := db.Classify(errors.New("driver: bad connection")); !f.Outage {
		t.Errorf("a driver error is %+v, want an outage", f)
	}
}
