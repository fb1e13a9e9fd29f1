# repstream — see README.md. `make run` for the demo, `make test` for the tests.
GO      ?= go
BIN     ?= bin/repstream
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)

.PHONY: all build run test test-short vet fuzz e2e bench proto clean

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

# Short fuzzing over the committed seed corpora.
FUZZTIME ?= 10s
fuzz:
	$(GO) test ./cdc -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME)

e2e: build
	$(GO) test -tags e2e -count=1 -timeout 10m ./web/...

bench: build
	$(GO) run ./cmd/repstream bench

clean:
	rm -rf bin
