# The two commands: `make run` and `make test`. Without DATABASE_URL, `make run`
# uses a throwaway PostgreSQL in .pgdata/run; `make test` always uses its own in
# .pgdata/test, started from the installed server binaries and stopped afterwards,
# and first installs what the tests need (scripts/deps.sh: PostgreSQL, curl,
# Chromium) if the machine lacks it.

RUN_PG_PORT  ?= 54320
TEST_PG_PORT ?= 54321
GO           ?= go
TESTFLAGS    ?=

BENCH_PG_PORT ?= 54322

# The version stamped into builds and images: the nearest tag, else the commit.
VERSION      ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
IMAGE        ?= pgsse

.PHONY: run test bench build image vet fuzz screenshot db-stop

# With PGSSE_DEMO=true (the default here) the demo page is served at / and the
# processing simulator runs beside pgsse, writing through SQL as a worker would.
run:
	@url="$${DATABASE_URL:-$$(scripts/pg.sh start .pgdata/run $(RUN_PG_PORT))}" || exit 1; \
	$(GO) build -o bin/pgsse . || exit 1; \
	export DATABASE_URL="$$url" PGSSE_DEMO="$${PGSSE_DEMO:-true}" PGSSE_AUTH_MODE="$${PGSSE_AUTH_MODE:-none}"; \
	echo "pgsse: database $$DATABASE_URL"; \
	echo "pgsse: open http://localhost$${PGSSE_ADDR:-:8080}/ (demo page), or curl -N 'http://localhost$${PGSSE_ADDR:-:8080}/events?topic=videos/*'"; \
	sim=; trap '[ -n "$$sim" ] && kill $$sim 2>/dev/null' EXIT; \
	if [ "$$PGSSE_DEMO" = true ]; then bin/pgsse demo & sim=$$!; fi; \
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
# the compared scenarios also run on BENCH_BASELINE's build.
bench:
	@scripts/deps.sh
	@url="$$(scripts/pg.sh start .pgdata/bench $(BENCH_PG_PORT))" || exit 1; \
	$(GO) build -o bin/pgsse . && $(GO) build -o bin/bench ./bench && \
	rm -rf bin/baseline-src && mkdir -p bin/baseline-src && \
	git archive $(BENCH_BASELINE) | tar -x -C bin/baseline-src && \
	(cd bin/baseline-src && $(GO) build -o ../pgsse-baseline .) && \
	DATABASE_URL="$$url" bin/pgsse migrate >/dev/null && \
	bin/bench -suite -pgsse bin/pgsse -baseline bin/pgsse-baseline -db "$$url" -out bin/bench-results; \
	status=$$?; scripts/pg.sh stop .pgdata/bench; exit $$status

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
	$(MAKE) test TESTFLAGS="-run TestBrowser_LivePage ./" PGSSE_SCREENSHOT=$(CURDIR)/docs/demo.png

db-stop:
	scripts/pg.sh stop .pgdata/run
	scripts/pg.sh stop .pgdata/test
	scripts/pg.sh stop .pgdata/bench
