// Package migrations holds pgsse's dbmate SQL migrations, embedded into the binary.
//
// The advisory locks the SQL here takes are named in package db (db.LockClass,
// db.LockSequence…); a migration that takes one uses those numbers.
package migrations

import "embed"

// FS holds the migration files; dbmate reads them from the root directory ".".
//
//go:embed *.sql
var FS embed.FS
