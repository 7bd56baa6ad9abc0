package db_test

import (
	"fmt"
	"regexp"
	"testing"

	"pgsse/db"
	"pgsse/internal/dbtest"
)

// TestLocks_SQLUsesTheKeys: every advisory lock the migrated functions take
// is in db.LockClass with a key package db names, and the sequencer takes
// db.LockSequence.
func TestLocks_SQLUsesTheKeys(t *testing.T) {
	sqlDB := dbtest.Open(t, dbtest.New(t))
	rows, err := sqlDB.Query(`SELECT p.oid::regprocedure::text, pg_get_functiondef(p.oid) FROM pg_proc p
		JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'pgsse' AND p.prokind = 'f'`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	lock := regexp.MustCompile(`pg_(?:try_)?advisory_(?:xact_)?lock\(\s*(\d+)\s*,\s*(\d+)\s*\)`)
	known := map[string]bool{fmt.Sprint(db.LockSequence): true, fmt.Sprint(db.LockMigrate): true, fmt.Sprint(db.LockPrune): true}
	takesSequence := false
	for rows.Next() {
		var name, def string
		if err := rows.Scan(&name, &def); err != nil {
			t.Fatal(err)
		}
		for _, m := range lock.FindAllStringSubmatch(def, -1) {
			if m[1] != fmt.Sprint(db.LockClass) || !known[m[2]] {
				t.Errorf("%s takes lock (%s, %s), which package db does not name", name, m[1], m[2])
			}
			takesSequence = takesSequence || name == "pgsse.sequence(integer)" && m[2] == fmt.Sprint(db.LockSequence)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if !takesSequence {
		t.Error("pgsse.sequence does not take db.LockSequence")
	}
}
