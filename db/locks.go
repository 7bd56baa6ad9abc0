package db

import "fmt"

// pgsse's advisory locks share one class, LockClass (the bytes "pgss"), and
// take one key each. The SQL functions of migrations/ use the same numbers
// (TestLocks_SQLUsesTheKeys checks the migrated functions); a migration that
// takes a lock must use these.
const (
	LockClass = 1885827955

	LockSequence     = 1   // pgsse.sequence: ids are drawn by one transaction at a time, in commit order
	LockMigrate      = 2   // migration runs, across replicas
	LockPrune        = 3   // one replica at a time prunes the log
	LockTestTemplate = 100 // internal/dbtest: one test process builds the template database
)

// xactLock returns the statement taking key's transaction-scoped lock:
// pg_advisory_xact_lock, or with try pg_try_advisory_xact_lock.
func xactLock(key int, try bool) string {
	fn := "pg_advisory_xact_lock"
	if try {
		fn = "pg_try_advisory_xact_lock"
	}
	return fmt.Sprintf("SELECT %s(%d, %d)", fn, LockClass, key)
}
