# dogpile-go: the two commands a newcomer needs are `make demo` and `make test`.

GO ?= go
STATICCHECK_VERSION ?= v0.8.2
# Tests that start servers are slow to repeat; the concurrency suites are
# repeated on their own below.
RACE_COUNT ?= 20

# Modules of their own, outside the root's ./...: the OpenTelemetry package
# (so that the core has no OTel dependency) and the Prometheus example.
SUBMODULES = otel examples/prometheus

.PHONY: demo test deps vet staticcheck unit forced race-repeat bench fmt-check vet-sub staticcheck-sub unit-sub

demo:
	$(GO) run ./examples/quickstart

## test: everything CI runs — formatting, vet, staticcheck, the full test
## suite under the race detector (real Redis and PostgreSQL included), and the
## concurrency suites repeated $(RACE_COUNT) times.
test: deps fmt-check vet vet-sub staticcheck staticcheck-sub unit unit-sub forced race-repeat

deps:
	@bash scripts/install-test-deps.sh

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "not gofmt'ed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

staticcheck:
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...

unit:
	$(GO) test -race -count=1 -timeout 30m ./...

vet-sub:
	@for m in $(SUBMODULES); do echo "vet $$m"; (cd $$m && $(GO) vet ./...) || exit 1; done

staticcheck-sub:
	@for m in $(SUBMODULES); do echo "staticcheck $$m"; (cd $$m && $(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...) || exit 1; done

unit-sub:
	@for m in $(SUBMODULES); do (cd $$m && $(GO) test -race -count=1 -timeout 10m ./...) || exit 1; done

## forced: the root package's suite again with FromCache and RelationshipCache
## forced on every query (internal/dbtest/force.go): a parity check of the
## cache against GORM over every test.
forced:
	@log=$$(mktemp); DOGPILE_FORCE_CACHE=1 $(GO) test -race -count=1 -timeout 30m -v . >$$log 2>&1; rc=$$?; \
	grep -E '^(--- FAIL|FAIL|ok |panic:|forced-cache mode)' $$log; \
	if [ $$rc -ne 0 ]; then tail -n 150 $$log; fi; rm -f $$log; exit $$rc

race-repeat:
	$(GO) test -race -count=$(RACE_COUNT) -timeout 30m -run 'TestRegionSuite' ./backends/memory/

## bench: every benchmark once, then the write benchmarks of issue 12
## (bench-write).
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...
	cd otel && $(GO) test -run '^$$' -bench . -benchmem ./...
	@$(MAKE) --no-print-directory bench-write

## bench-write: the write benchmarks on PostgreSQL (no plugin, memory region,
## Redis region), medians of RUNS runs and their ratios against the targets
## (scripts/bench-write.sh).
.PHONY: bench-write
bench-write:
	@GO=$(GO) bash scripts/bench-write.sh
