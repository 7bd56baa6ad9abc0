# The two commands: `make run` and `make test`. Without DATABASE_URL, `make run`
# uses a throwaway PostgreSQL in .pgdata/run (stopped when it exits); `make
# test` always uses its own in .pgdata/test, started from the installed server
# binaries and stopped afterwards, and first installs what the tests need
# (scripts/deps.sh: PostgreSQL, curl, Chromium) if the machine lacks it.

RUN_PG_PORT  ?= 54320
RUN_PG_DIR   ?= .pgdata/run
TEST_PG_PORT ?= 54321
GO           ?= go
TESTFLAGS    ?=

BENCH_PG_PORT ?= 54322
BENCH_DURABLE_PG_PORT ?= 54324

# The version stamped into builds and images: the nearest tag, else the commit.
VERSION      ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
IMAGE        ?= pgsse

.PHONY: run test bench bench-commit build image vet fuzz screenshot db-stop

# With PGSSE_DEMO=true (the default here) the demo page is served at /. The
# processing simulator runs beside pgsse, writing fake videos through SQL as a
# worker would, into the throwaway database only: with your own DATABASE_URL it
# stays off unless SIMULATE=true. On exit (Ctrl-C) the throwaway PostgreSQL is
# stopped; its data stays in RUN_PG_DIR for the next make run.
run:
	@own=; [ -n "$${DATABASE_URL:-}" ] && own=yes; \
	if [ -n "$$own" ]; then url=$$DATABASE_URL; else url=$$(scripts/pg.sh start $(RUN_PG_DIR) $(RUN_PG_PORT)) || exit 1; fi; \
	simulate=$${SIMULATE:-$${own:+false}}; simulate=$${simulate:-$${PGSSE_DEMO:-true}}; \
	sim=; cleanup() { \
		[ -n "$$sim" ] && kill $$sim 2>/dev/null; \
		[ -z "$$own" ] && scripts/pg.sh stop $(RUN_PG_DIR) && \
			echo "pgsse: stopped the throwaway PostgreSQL (data kept in $(RUN_PG_DIR); rm -rf $(RUN_PG_DIR) to start afresh)"; \
	}; trap cleanup EXIT; trap 'exit 130' INT TERM; \
	$(GO) build -o bin/pgsse . || exit 1; \
	export DATABASE_URL="$$url" PGSSE_DEMO="$${PGSSE_DEMO:-true}" PGSSE_AUTH_MODE="$${PGSSE_AUTH_MODE:-none}"; \
	if [ -n "$$own" ]; then echo "pgsse: database from your DATABASE_URL"; else echo "pgsse: throwaway database $$DATABASE_URL"; fi; \
	if [ "$$simulate" = true ]; then bin/pgsse demo & sim=$$!; echo "pgsse: the simulator writes demo videos into it"; \
	else echo "pgsse: simulator off (SIMULATE=true writes demo videos into your database)"; fi; \
	addr=$${PGSSE_ADDR:-:8080}; case $$addr in :*) addr=localhost$$addr;; esac; \
	echo "pgsse: open http://$$addr/ (demo page), or curl -N 'http://$$addr/events?topic=videos/*'"; \
	bin/pgsse serve

test:
	@scripts/deps.sh
	@url="$$(scripts/pg.sh start .pgdata/test $(TEST_PG_PORT))" || exit 1; \
	PGSSE_TEST_DATABASE_URL="$$url" $(GO) test -race -count=1 -timeout 15m $(TESTFLAGS) ./...; \
	status=$$?; scripts/pg.sh stop .pgdata/test; exit $$status

# The design the compared scenarios measure against: the commit before issue 11
# (streams on net/http, a goroutine each).
BENCH_BASELINE ?= e13392a

# The standard load suite behind BENCHMARKS.md (several minutes): a throwaway
# PostgreSQL in .pgdata/bench, a fresh pgsse per scenario, the baselines, and
# the compared scenarios also run on BENCH_BASELINE's build; then the commit
# path (bench-commit).
bench:
	@scripts/deps.sh
	@url="$$(scripts/pg.sh start .pgdata/bench $(BENCH_PG_PORT))" || exit 1; \
	$(GO) build -o bin/pgsse . && $(GO) build -o bin/bench ./bench && \
	rm -rf bin/baseline-src && mkdir -p bin/baseline-src && \
	git archive $(BENCH_BASELINE) | tar -x -C bin/baseline-src && \
	(cd bin/baseline-src && $(GO) build -o ../pgsse-baseline .) && \
	DATABASE_URL="$$url" bin/pgsse migrate >/dev/null && \
	bin/bench -suite -pgsse bin/pgsse -baseline bin/pgsse-baseline -db "$$url" -out bin/bench-results; \
	status=$$?; scripts/pg.sh stop .pgdata/bench; [ $$status = 0 ] && $(MAKE) --no-print-directory bench-commit || exit $$status

# The commit path (about 9 minutes): pgbench's single-row UPDATE with pgsse's
# triggers (and pgsse, and without it) against a bare trigger + pg_notify, at
# 1, 4 and 16 writers, and one 10 000-row UPDATE with and without pgsse's
# triggers, on a throwaway cluster with fsync off (.pgdata/bench) and one with
# PostgreSQL's durable defaults (.pgdata/bench-durable).
bench-commit:
	@scripts/deps.sh
	@url="$$(scripts/pg.sh start .pgdata/bench $(BENCH_PG_PORT))" || exit 1; \
	durable="$$(PG_DURABLE=1 scripts/pg.sh start .pgdata/bench-durable $(BENCH_DURABLE_PG_PORT))" || exit 1; \
	$(GO) build -o bin/pgsse . && $(GO) build -o bin/bench ./bench && \
	bin/bench -commit "durable=$$durable,fsync-off=$$url" -pgsse bin/pgsse -out bin/bench-commit; \
	status=$$?; scripts/pg.sh stop .pgdata/bench; scripts/pg.sh stop .pgdata/bench-durable; exit $$status

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-X main.version=$(VERSION)" -o pgsse .

# The container image, tagged with the version: make image IMAGE=registry.example.com/pgsse
# (then docker push, and point the manifests at it: README, "Releasing").
image:
	docker build --build-arg VERSION=$(VERSION) -t $(IMAGE):$(VERSION) .

vet:
	gofmt -l . | (! grep .) && $(GO) vet ./...

# A longer run of the encoder's fuzz target than the seed corpus `make test` runs.
fuzz:
	$(GO) test ./sse -run '^$$' -fuzz FuzzMessage_AppendTo -fuzztime 60s

# Refresh the README's screenshot of the demo page (taken by the browser test).
screenshot:
	$(MAKE) test TESTFLAGS="-run TestBrowser_LivePage ./e2e" PGSSE_SCREENSHOT=$(CURDIR)/docs/demo.png

db-stop:
	scripts/pg.sh stop $(RUN_PG_DIR)
	scripts/pg.sh stop .pgdata/test
	scripts/pg.sh stop .pgdata/bench
	scripts/pg.sh stop .pgdata/bench-durable
