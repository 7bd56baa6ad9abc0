package db

import "database/sql"

// SQLDB exposes the pool to the package's external tests.
func (s *Store) SQLDB() *sql.DB { return s.db }
