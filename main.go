// Command pgsse streams PostgreSQL changes to browsers and services as
// Server-Sent Events. See README.md.
//
//	pgsse [serve] [flags]   run the service (default)
//	pgsse migrate [flags]   apply the database migrations and exit
//	pgsse demo [flags]      simulate uploads and processing, for the demo page
//	pgsse healthcheck       exit 0 if the local pgsse is ready (for images with no shell)
//	pgsse version           print the version
//	pgsse help [command]    the commands and flags
//
// Each command is one file: serve.go (with readiness.go, http.go and
// authorizer.go, its parts), migrate.go, demo.go, healthcheck.go, version.go;
// config.go holds every setting.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"

	"pgsse/db"
	"pgsse/demo"
	"pgsse/hub"
	"pgsse/listener"
	"pgsse/stream"
)

var _ stream.History = (*db.Store)(nil)
var _ listener.Log = (*db.Store)(nil)
var _ listener.Sink = (*hub.Hub)(nil)
var _ demo.States = (*db.Store)(nil)
var _ demo.Writer = (*db.Store)(nil)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "pgsse:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch {
	case cmd == "version", cmd == "serve" && len(args) > 0 && (args[0] == "--version" || args[0] == "-version"):
		return printVersion(stdout)
	case cmd == "help":
		// pgsse help [command]: that command's help, as --help would print it.
		cmd = "serve"
		if len(args) > 0 {
			cmd = args[0]
		}
		if !knownCommand(cmd) {
			return fmt.Errorf("help: unknown command %q (pgsse help lists them)", cmd)
		}
		args = []string{"--help"}
	case !knownCommand(cmd):
		return fmt.Errorf("unknown command %q (pgsse help lists the commands)", cmd)
	}
	cfg, err := parseConfig(cmd, args)
	if h := (*helpRequested)(nil); errors.As(err, &h) {
		_, err := io.WriteString(stdout, h.text)
		return err
	}
	if err != nil {
		return err
	}
	log, err := newLogger(cfg, stdout)
	if err != nil {
		return err
	}
	for _, name := range cfg.UnknownVariables {
		log.Warn().Str("variable", name).Msg("unknown PGSSE_ variable ignored")
	}
	switch cmd {
	case "serve":
		return serve(ctx, cfg, log)
	case "migrate":
		return migrate(ctx, cfg, log)
	case "demo":
		return simulate(ctx, cfg, log)
	default: // healthcheck; knownCommand let nothing else through
		return healthcheck(cfg)
	}
}

func knownCommand(cmd string) bool {
	switch cmd {
	case "serve", "migrate", "demo", "healthcheck", "version", "help":
		return true
	}
	return false
}

func newLogger(cfg config, stdout io.Writer) (zerolog.Logger, error) {
	level, err := zerolog.ParseLevel(cfg.LogLevel)
	if err != nil || cfg.LogLevel == "" {
		return zerolog.Logger{}, fmt.Errorf("log level %q: use debug, info, warn or error", cfg.LogLevel)
	}
	out := stdout
	format := cfg.LogFormat
	if format == "" {
		format = "json"
		if f, ok := stdout.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
			format = "console"
		}
	}
	switch format {
	case "json":
	case "console":
		out = zerolog.ConsoleWriter{Out: stdout, TimeFormat: time.TimeOnly}
	default:
		return zerolog.Logger{}, fmt.Errorf("log format %q: use json or console", format)
	}
	zerolog.TimeFieldFormat = time.RFC3339Nano
	return zerolog.New(out).Level(level).With().Timestamp().Logger(), nil
}
