# repstream — see README.md. `make run` for the demo, `make test` for the tests.
GO      ?= go
BIN     ?= bin/repstream
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)

.PHONY: all build run test test-versions pgversions vet fuzz jstest e2e bench proto clean

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/repstream

# The demo: a throwaway Postgres, the demo marketplace, a writer and the dashboard.
run: build
	./$(BIN) dev

vet:
	$(GO) vet ./...

# Every test against a real Postgres: a throwaway cluster is started from the
# installed server binaries unless REPSTREAM_TEST_DATABASE_URL is set.
test: vet
	$(GO) test -race -timeout 20m ./...
	$(MAKE) fuzz
	$(MAKE) jstest
	$(MAKE) test-versions

# The version matrix: the core's crash, convergence and schema tests, the
# doctor's and the catch-up tests again on each PostgreSQL of PG_VERSIONS, run
# from the npm builds pinned in cdc/localpg/pgversions (the full suite above
# runs on the installed server). Without -race: the full suite has it.
PG_VERSIONS   ?= 14 16 17 18
VERSIONS_PKGS := ./cdc/localpg ./sql/migrations ./stream ./cdc/doctor ./api/e2e
VERSIONS_CMD  := TestKill9Converges|TestSlotDroppedUnderRunningService|TestSlotLostToMaxSlotWALKeepSize|TestServeWaitsForDatabase|TestFailover.*|TestStandbySource.*
test-versions: pgversions
	@for v in $(PG_VERSIONS); do \
		start=$$(date +%s); echo "== PostgreSQL $$v"; \
		REPSTREAM_TEST_PG=$$v $(GO) test -count=1 -timeout 20m $(VERSIONS_PKGS) || exit 1; \
		REPSTREAM_TEST_PG=$$v $(GO) test -count=1 -timeout 20m -run '^($(VERSIONS_CMD))$$' ./cmd/repstream || exit 1; \
		echo "== PostgreSQL $$v passed in $$(( $$(date +%s) - start ))s"; \
	done

# The PostgreSQL builds of the version matrix, exactly as package-lock.json pins them.
pgversions: cdc/localpg/pgversions/node_modules/.package-lock.json
cdc/localpg/pgversions/node_modules/.package-lock.json: cdc/localpg/pgversions/package-lock.json
	npm ci --ignore-scripts --no-audit --no-fund --prefix cdc/localpg/pgversions

# The browser client's tests (web/test, node --test) and its type check:
# repstream.js's JSDoc under tsc --checkJs, and against repstream.d.ts.
# Needs Node >= 20 and npm; `npm ci` installs only what web/package-lock.json
# pins, from the npm registry.
jstest:
	cd web && npm ci --no-audit --no-fund --loglevel=error
	cd web && npm test
	cd web && npm run typecheck

# Short fuzzing over the committed seed corpora. A count, not a duration:
# Go 1.26's fuzz coordinator can fail a target with "context deadline
# exceeded" when a -fuzztime duration ends mid-run (golang/go#75804, fixed in
# Go 1.27); a count has no deadline to race.
FUZZTIME ?= 100000x
fuzz:
	$(GO) test ./cdc -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME)
	$(GO) test ./api/wire -run '^$$' -fuzz '^FuzzDecodeClient$$' -fuzztime $(FUZZTIME)
	$(GO) test ./api/wire -run '^$$' -fuzz '^FuzzDecodeServer$$' -fuzztime $(FUZZTIME)

# Regenerate api/proto's Go code from repstream.proto (needs protoc and
# protoc-gen-go v1.36.12; the generated code is committed).
proto:
	$(GO) generate ./api/proto

# Browser tests in headless Chromium (installed from Debian's packages if missing).
e2e:
	command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)
	$(GO) test -tags e2e -count=1 -timeout 10m ./web/...

# The primary failover step runs on the pinned PostgreSQL 17 (pgversions).
bench: build pgversions
	$(GO) run ./cmd/repstream bench

clean:
	rm -rf bin
