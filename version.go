package main

import (
	"fmt"
	"io"
)

// version is stamped at build time: -ldflags "-X main.version=v1.2.3".
var version = "dev"

// printVersion is pgsse version (and --version).
func printVersion(w io.Writer) error {
	_, err := fmt.Fprintln(w, "pgsse", version)
	return err
}
