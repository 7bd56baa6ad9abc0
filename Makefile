# The two commands: `make run` and `make test`. Without DATABASE_URL, `make run`
# uses a throwaway PostgreSQL in .pgdata/run; `make test` always uses its own in
# .pgdata/test, started from the installed server binaries and stopped afterwards.

RUN_PG_PORT  ?= 54320
TEST_PG_PORT ?= 54321
GO           ?= go
TESTFLAGS    ?=

.PHONY: run test build vet fuzz db-stop

run:
	@url="$${DATABASE_URL:-$$(scripts/pg.sh start .pgdata/run $(RUN_PG_PORT))}" || exit 1; \
	echo "pgsse: database $$url"; \
	echo "pgsse: streams on http://localhost$${PGSSE_ADDR:-:8080}/events?topic=videos/*"; \
	DATABASE_URL="$$url" $(GO) run . serve

test:
	@url="$$(scripts/pg.sh start .pgdata/test $(TEST_PG_PORT))" || exit 1; \
	PGSSE_TEST_DATABASE_URL="$$url" $(GO) test -race -count=1 -timeout 15m $(TESTFLAGS) ./...; \
	status=$$?; scripts/pg.sh stop .pgdata/test; exit $$status

build:
	CGO_ENABLED=0 $(GO) build -trimpath -o pgsse .

vet:
	gofmt -l . | (! grep .) && $(GO) vet ./...

# A longer run of the encoder's fuzz target than the seed corpus `make test` runs.
fuzz:
	$(GO) test ./sse -run '^$$' -fuzz FuzzMessage_AppendTo -fuzztime 60s

db-stop:
	scripts/pg.sh stop .pgdata/run
	scripts/pg.sh stop .pgdata/test
