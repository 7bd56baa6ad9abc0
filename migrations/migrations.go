// Package migrations holds pgsse's dbmate SQL migrations, embedded into the binary.
//
// Advisory lock keys used by the SQL here and by package db share the class
// 1885827955 (the bytes "pgss"): 1 orders event ids at commit, 2 serialises
// migrations, 3 lets one replica at a time prune the log.
package migrations

import "embed"

// FS holds the migration files; dbmate reads them from the root directory ".".
//
//go:embed *.sql
var FS embed.FS
