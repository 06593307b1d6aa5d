# maumeter developer entry points. `make` (or `make help`) lists the targets.
# Real ClickHouse and Kafka run locally without Docker: see scripts/*.sh.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

GO ?= go
# Fixed ports for `make up` (override: make up KAFKA_PORT=29092 ...).
CH_TCP_PORT ?= 19000
CH_HTTP_PORT ?= 18123
KAFKA_PORT ?= 19092
KAFKA_CONTROLLER_PORT ?= 19093
UP_DIR := .cache/up
# What `make build` stamps into the binary (`maumeter version`); the Dockerfile takes it as a build arg.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
# staticcheck, run by `make lint` through `go run` at this version (not a module requirement).
STATICCHECK_VERSION ?= v0.8.2

.PHONY: help
help: ## Show this help
	@echo "Usage: make <target> [VAR=value]"
	@echo
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo
	@echo "up/down ports: CH_TCP_PORT=$(CH_TCP_PORT) CH_HTTP_PORT=$(CH_HTTP_PORT) KAFKA_PORT=$(KAFKA_PORT) KAFKA_CONTROLLER_PORT=$(KAFKA_CONTROLLER_PORT)"

.PHONY: fetch
fetch: ## Download ClickHouse (libchdb via npm) and Kafka (Maven) into .cache/
	scripts/clickhouse.sh fetch
	scripts/kafka.sh fetch

.PHONY: up
up: ## Start ClickHouse + Kafka in the background (state in .cache/up/) and print export lines
	@mkdir -p $(UP_DIR)
	@scripts/clickhouse.sh start $(UP_DIR)/clickhouse $(CH_TCP_PORT) $(CH_HTTP_PORT)
	@scripts/kafka.sh start $(UP_DIR)/kafka $(KAFKA_PORT) $(KAFKA_CONTROLLER_PORT)
	@echo "# eval \"\$$(make -s up)\" sets these in your shell; 'make down' stops both"
	@echo "export MAUMETER_CLICKHOUSE_ADDR=127.0.0.1:$(CH_TCP_PORT)"
	@echo "export MAUMETER_CLICKHOUSE_HTTP=127.0.0.1:$(CH_HTTP_PORT)"
	@echo "export MAUMETER_CLICKHOUSE_DATADIR=$(CURDIR)/$(UP_DIR)/clickhouse"
	@echo "export MAUMETER_CLICKHOUSE_SCRIPT=$(CURDIR)/scripts/clickhouse.sh"
	@echo "export MAUMETER_KAFKA_BROKERS=127.0.0.1:$(KAFKA_PORT)"
	@echo "export MAUMETER_KAFKA_DATADIR=$(CURDIR)/$(UP_DIR)/kafka"
	@echo "export MAUMETER_KAFKA_SCRIPT=$(CURDIR)/scripts/kafka.sh"
	@echo "export MAUMETER_REPLICATION_FACTOR=1 MAUMETER_MIN_INSYNC_REPLICAS=1 # one broker"

.PHONY: down
down: ## Stop the services started by `make up` (their data stays in .cache/up/)
	@scripts/kafka.sh stop $(UP_DIR)/kafka
	@scripts/clickhouse.sh stop $(UP_DIR)/clickhouse

.PHONY: build
build: ## Build bin/maumeter, stamped with VERSION (default: git describe) for `maumeter version`
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o bin/maumeter ./cmd/maumeter

# Fuzzers run by `make test` (and `make fuzz`), each for FUZZTIME: package:FuzzName.
FUZZTIME ?= 10s
FUZZERS := ./pkg/event:FuzzParse ./pkg/event:FuzzSplitBatch ./pkg/event:FuzzDecode ./pipeline/ingest:FuzzHandler

# The clock of the calendar step of `make test`: every maumeter process and test reads it
# (MAUMETER_FAKE_NOW, see internal/clock), starting there and advancing with real time.
FAKE_NOW ?= 2029-07-15T10:00:00Z
# The tests whose outcome depends on the date: months, purchase days, the ingest window, closes,
# invoices and POC caps; the others use fixed injected clocks or no calendar.
CLOCK_TESTS := ^(TestBilling|TestPOCCap|TestImport|TestDemo|TestEndToEnd|TestCloseRace|TestComposeTenantsExampleInForce)$$

.PHONY: test
test: ## Run all tests against real ClickHouse + Kafka on random ports; the e2e suite, the calendar step (clock at FAKE_NOW), the chaos and Kafka outage tests and the fuzzers each on services of their own
	scripts/with-services.sh --clickhouse --kafka -- env MAUMETER_REQUIRE_SERVICES=1 $(GO) test -race -count=1 -timeout 25m $$($(GO) list ./... | grep -v /e2e)
	scripts/with-services.sh --clickhouse --kafka -- env MAUMETER_REQUIRE_SERVICES=1 $(GO) test -count=1 -timeout 20m ./e2e/
	@# The calendar moves on: the date-dependent tests again with the clock years ahead.
	$(MAKE) --no-print-directory test-clock
	@# The short chaos matrix restarts Kafka and ClickHouse: it gets services of its own (`make chaos`: all of it).
	scripts/with-services.sh --clickhouse --kafka -- env MAUMETER_REQUIRE_SERVICES=1 MAUMETER_CHAOS=1 $(GO) test -count=1 -timeout 20m -run '^TestChaos$$' ./e2e/
	@# The outage test stops and restarts its broker: it gets one of its own.
	scripts/with-services.sh --kafka -- env MAUMETER_REQUIRE_SERVICES=1 MAUMETER_KAFKA_EXCLUSIVE=1 $(GO) test -race -count=1 -timeout 10m -v ./e2e/outage
	$(MAKE) --no-print-directory fuzz
	$(MAKE) --no-print-directory test-sdk

# The client SDKs' own tests (sdk/*); their conformance against the real gateway runs in the
# e2e step (TestSDKConformance, sdk/CONFORMANCE.md).
.PHONY: test-sdk
test-sdk: ## Run the client SDKs' unit tests (sdk/go)
	cd sdk/go && $(GO) test -race -count=1 ./...

# Where `make chaos` writes the results table of the matrix (markdown).
CHAOS_REPORT ?= .cache/chaos-report.md

.PHONY: chaos
chaos: ## Run the full chaos matrix (docs/RELIABILITY.md: every row, more events, ClickHouse down 3 min) on services of its own; the results table goes to CHAOS_REPORT
	@mkdir -p $(dir $(CHAOS_REPORT))
	@# A SIGKILLed client can tear a query's connection, which aborts the embedded ClickHouse (chDB,
	@# see docs/ARCHITECTURE.md): the run restarts it and each row reports how often.
	MAUMETER_RESTART_CLICKHOUSE=1 scripts/with-services.sh --clickhouse --kafka -- env MAUMETER_REQUIRE_SERVICES=1 MAUMETER_CHAOS=full MAUMETER_CHAOS_REPORT=$(abspath $(CHAOS_REPORT)) $(GO) test -count=1 -timeout 90m -v -run '^TestChaos$$' ./e2e/
	@echo "results: $(CHAOS_REPORT)"

.PHONY: test-clock
test-clock: ## The tests that depend on the date, with every process's clock at FAKE_NOW (default 2029-07-15), on services of their own
	scripts/with-services.sh --clickhouse --kafka -- env MAUMETER_REQUIRE_SERVICES=1 MAUMETER_FAKE_NOW=$(FAKE_NOW) $(GO) test -count=1 -timeout 15m -run '$(CLOCK_TESTS)' . ./e2e/

.PHONY: fuzz
fuzz: ## Run each fuzzer for FUZZTIME (default 10s)
	@for f in $(FUZZERS); do \
		echo "fuzz $${f#*:} ($${f%%:*}) for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$${f#*:}\$$" -fuzztime $(FUZZTIME) "$${f%%:*}" || exit 1; \
	done

.PHONY: demo
demo: ## Run the demo against a real ClickHouse
	scripts/with-services.sh --clickhouse -- $(GO) run ./cmd/maumeter demo

.PHONY: bench
bench: ## Run the benchmarks against real ClickHouse + Kafka
	scripts/with-services.sh --clickhouse --kafka -- $(GO) test -run '^$$' -bench . -benchmem ./...

.PHONY: lint
lint: ## gofmt, go vet, staticcheck, shellcheck (scripts, .ci/run) and go mod tidy -diff: each must report nothing
	@echo "gofmt -l"
	@files=$$(git ls-files -co --exclude-standard '*.go'); \
	bad=$$(gofmt -l $$files); \
	if [ -n "$$bad" ]; then echo "gofmt needed on:"; echo "$$bad"; exit 1; fi
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...
	@if ! command -v shellcheck >/dev/null; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "shellcheck missing: apt-get install shellcheck"; \
			apt-get install -y -qq shellcheck >/dev/null || { apt-get update -qq && apt-get install -y -qq shellcheck >/dev/null; }; \
		else \
			echo "make lint: shellcheck is not installed; install it (Debian/Ubuntu: sudo apt-get install shellcheck) and run again" >&2; exit 1; \
		fi; \
	fi
	shellcheck $$(git ls-files -co --exclude-standard '*.sh') .ci/run
	$(GO) mod tidy -diff
	cd sdk/go && $(GO) vet ./... && $(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./... && $(GO) mod tidy -diff

.PHONY: clean
clean: down ## Stop `make up` services; remove bin/ and .cache/up/ (keeps downloads)
	rm -rf bin .cache/up

.PHONY: distclean
distclean: clean ## clean, and remove all of .cache/ (downloads too; stop running copies first)
	rm -rf .cache
