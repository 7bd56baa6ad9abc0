// Package e2e runs pgsse as its users do: the binary as a process, against a
// real PostgreSQL (and PgBouncer, toxiproxy), with real HTTP clients, Chromium,
// curl, psql and make. Its tests are the guarantees of the README, one file per
// area; those that need a database skip without PGSSE_TEST_DATABASE_URL (make
// test sets it).
package e2e
