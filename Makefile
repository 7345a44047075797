# token-refresher: build, check, test and deploy.
# Needs only Go, Python 3 and GNU make; recipes are POSIX sh.

SHELL := /bin/sh
.DEFAULT_GOAL := help
# Prerequisites run in order (deps before lint before test), also under -j.
.NOTPARALLEL:

GO       ?= go
PYTHON   ?= python3
PIP      ?= $(PYTHON) -m pip install
FUZZTIME ?= 30s

# The Lambda binary: provided.al2023 on Graviton, no RPC shim, reproducible.
LAMBDA_BUILD = GOOS=linux GOARCH=arm64 CGO_ENABLED=0 $(GO) build -tags lambda.norpc -trimpath -ldflags="-s -w"

# Whichever cfn-lint works: the script on PATH, `python3 -m cfnlint`, or the
# package's entry point when pip put the script outside PATH. Deferred (?= is
# recursive) so a cfn-lint that `deps` installed earlier in the same run is found.
CFN_LINT ?= $(shell \
	if command -v cfn-lint >/dev/null 2>&1; then echo cfn-lint; \
	elif $(PYTHON) -m cfnlint --version >/dev/null 2>&1; then echo "$(PYTHON) -m cfnlint"; \
	elif $(PYTHON) -c 'import cfnlint.runner' >/dev/null 2>&1; then echo "$(PYTHON) -c 'import sys; from cfnlint.runner import main; sys.exit(main())'"; \
	fi)

.PHONY: help deps build build-RefresherFunction lint test test-race fuzz soak bench demo invoke deploy clean

help:
	@echo "token-refresher make targets:"
	@echo "  deps       go mod download; install moto[server] and cfn-lint with pip if missing"
	@echo "  build      build/bootstrap for provided.al2023 arm64"
	@echo "  build-RefresherFunction  the same into \$$ARTIFACTS_DIR (used by sam build)"
	@echo "  lint       gofmt, go vet, cfn-lint template.yaml"
	@echo "  test       deps, lint, then go test ./... (set CI=true to make missing tools fail)"
	@echo "  test-race  as test, with the race detector"
	@echo "  fuzz       run every Fuzz target under pkg/ and internal/ for FUZZTIME (now $(FUZZTIME)) each"
	@echo "  soak       long reliability run (TR_SOAK=1, internal/reliability)"
	@echo "  bench      benchmarks in pkg/"
	@echo "  demo       run the real bootstrap against moto and provider simulators"
	@echo "  invoke     sam local invoke (needs the SAM CLI and Docker)"
	@echo "  deploy     sam build && sam deploy (samconfig.toml)"
	@echo "  clean      remove build/ and .aws-sam/"

deps:
	$(GO) mod download
	@if $(PYTHON) -c 'import moto, flask, flask_cors' >/dev/null 2>&1; then \
		echo "moto[server]: installed"; \
	else \
		echo "$(PIP) 'moto[server]'"; $(PIP) 'moto[server]'; \
	fi
	@if command -v cfn-lint >/dev/null 2>&1 || $(PYTHON) -m cfnlint --version >/dev/null 2>&1; then \
		echo "cfn-lint: installed"; \
	else \
		echo "$(PIP) cfn-lint"; $(PIP) cfn-lint; \
	fi

build:
	$(LAMBDA_BUILD) -o build/bootstrap ./functions/refresher

# sam build (BuildMethod: makefile) runs this with ARTIFACTS_DIR set.
build-RefresherFunction:
	@if [ -z "$(ARTIFACTS_DIR)" ]; then echo "ARTIFACTS_DIR is not set; sam build sets it" >&2; exit 1; fi
	$(LAMBDA_BUILD) -o "$(ARTIFACTS_DIR)/bootstrap" ./functions/refresher

lint:
	@out=$$(gofmt -l .) || exit 1; \
	if [ -n "$$out" ]; then echo "gofmt: these files need formatting (gofmt -w):" >&2; echo "$$out" >&2; exit 1; fi
	$(GO) vet ./...
	@if [ -z "$(CFN_LINT)" ]; then echo "cfn-lint not found; run 'make deps'" >&2; exit 1; fi
	$(CFN_LINT) template.yaml

test: deps lint
	$(GO) test -count=1 -timeout 14m ./...

test-race: deps lint
	$(GO) test -race -count=1 -timeout 30m ./...

# One target at a time (go test -fuzz takes one); every target runs even after
# a failure, and the run fails if any did.
fuzz:
	@files=""; \
	for root in pkg internal; do \
		[ -d "$$root" ] || continue; \
		files="$$files $$(find "$$root" -name '*_test.go' ! -path '*/testdata/*' -exec grep -l '^func Fuzz' {} +)"; \
	done; \
	dirs=$$(for f in $$files; do echo "$$f" | sed 's|/[^/]*$$||'; done | sort -u); \
	if [ -z "$$dirs" ]; then echo "fuzz: no Fuzz targets under pkg/ or internal/"; exit 0; fi; \
	failed=0; \
	for d in $$dirs; do \
		out=$$($(GO) test -list '^Fuzz' "./$$d") || { echo "$$out" >&2; echo "fuzz: cannot list ./$$d" >&2; failed=1; continue; }; \
		for name in $$(echo "$$out" | grep '^Fuzz'); do \
			echo "fuzz: ./$$d $$name for $(FUZZTIME)"; \
			$(GO) test -run='^$$' -fuzz="^$$name\$$" -fuzztime=$(FUZZTIME) "./$$d" || { echo "fuzz: FAIL ./$$d $$name" >&2; failed=1; }; \
		done; \
	done; \
	exit $$failed

soak:
	TR_SOAK=1 $(GO) test -count=1 -timeout 80m -v ./internal/reliability/...

bench:
	$(GO) test -run='^$$' -bench=. -benchmem ./pkg/...

demo: deps
	$(GO) run ./internal/cmd/demo

invoke:
	@if command -v sam >/dev/null 2>&1 && docker info >/dev/null 2>&1; then \
		sam build && sam local invoke RefresherFunction -e events/scheduled.json; \
	else \
		echo "sam local invoke needs the SAM CLI and a Docker daemon; 'make demo' runs the real bootstrap through the local Lambda runtime emulator instead"; \
	fi

deploy:
	sam build
	sam deploy

clean:
	rm -rf build .aws-sam
