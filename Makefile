# Tributary: `make run` starts the hub, `make test` installs what the tests need and runs them all.
GO      ?= go
GOBIN   := $(shell $(GO) env GOPATH)/bin
INFLUXD ?= $(shell command -v influxd 2>/dev/null || echo $(GOBIN)/influxd)
export INFLUXD

.PHONY: run test test-short deps bench fuzz vet lint

run:
	$(GO) run ./cmd/hubd

# deps installs the real InfluxDB 1.8 the storage tests start (a ~3 minute build the first time),
# and chromium and playwright-core for the dashboard's browser test.
deps:
	@test -x "$(INFLUXD)" || { echo "installing influxd v1.8.10 (first time only, ~3 min)"; \
		cd /tmp && $(GO) install github.com/influxdata/influxdb/cmd/influxd@v1.8.10; }
	@# Debian packages: chromium for the dashboard's browser test (web/browser_test.go), iproute2
	@# for the multicast discovery test's network namespaces (devices/).
	@missing=""; test -x /usr/bin/chromium || missing="$$missing chromium"; \
		command -v ip >/dev/null || missing="$$missing iproute2"; \
		test -z "$$missing" || { echo "installing$$missing (first time only)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; }
	@test -f web/e2e/node_modules/playwright-core/package.json || npm ci --prefix web/e2e --no-audit --no-fund

test: deps
	$(GO) vet ./...
	$(GO) test -race -timeout 14m ./...

test-short:
	$(GO) test -short ./...

# bench runs the whole-system benchmark (see README, Benchmarks).
bench:
	$(GO) run ./cmd/hubbench

# fuzz runs every fuzz target for FUZZTIME each (seeds live in testdata/fuzz).
FUZZTIME ?= 30s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
		for t in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
			echo "== $$pkg $$t"; $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
		done; \
	done

# lint runs staticcheck (pinned; fetched through the module proxy on first use).
lint:
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...
