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
# The event `make invoke` posts.
EVENT    ?= events/scheduled.json
# Extra flags for `make local`, e.g. LOCAL_ARGS='-addr 127.0.0.1:9001 -seed=false'.
LOCAL_ARGS ?=

# AWS's Lambda Runtime Interface Emulator, pinned (not in go.mod); internal/rie pins the
# same version and its test checks that the two agree.
RIE_MODULE  = github.com/aws/aws-lambda-runtime-interface-emulator/cmd/aws-lambda-rie
RIE_VERSION = v0.0.0-20261030222936-bef5c4ba774d

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

.PHONY: help deps tools build build-RefresherFunction lint test test-race fuzz soak bench loadtest demo local invoke sam-invoke deploy clean

help:
	@echo "token-refresher make targets:"
	@echo "  deps       go mod download; install moto[server] and cfn-lint with pip if missing (npm ci for consumers/node if npm is present)"
	@echo "  tools      build/tools/aws-lambda-rie at the pinned version (make local/invoke/demo do this themselves)"
	@echo "  build      build/bootstrap for provided.al2023 arm64"
	@echo "  build-RefresherFunction  the same into \$$ARTIFACTS_DIR (used by sam build)"
	@echo "  lint       gofmt, go vet, cfn-lint template.yaml"
	@echo "  test       deps, lint, then go test ./... (set CI=true to make missing tools fail)"
	@echo "  test-race  as test, with the race detector"
	@echo "  fuzz       run every Fuzz target under pkg/ and internal/ for FUZZTIME (now $(FUZZTIME)) each"
	@echo "  soak       long reliability run (TR_SOAK=1, internal/reliability)"
	@echo "  bench      benchmarks in pkg/ and the bootstrap's init cost (internal/initcost)"
	@echo "  loadtest   1,000 tokens due at once on moto behind a 50 writes/s Secrets Manager limit (internal/loadtest; LOADTEST_ARGS='-tokens 200 -concurrency 8 -deadline 60s')"
	@echo "  demo       the real bootstrap under aws-lambda-rie against moto and the provider simulators"
	@echo "  local      moto + simulators + the function under aws-lambda-rie until Ctrl-C; prints export lines for tokenctl"
	@echo "  invoke     post EVENT (now $(EVENT)) to the function under aws-lambda-rie, print the answer (no Docker needed)"
	@echo "  sam-invoke sam build && sam local invoke (needs the SAM CLI and Docker)"
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
	@# npm ci reinstalls from scratch, so only when node_modules is missing or older than the lock file.
	@if [ -f consumers/node/package-lock.json ] && command -v npm >/dev/null 2>&1; then \
		if [ ! -f consumers/node/node_modules/.package-lock.json ] || \
		   [ consumers/node/package-lock.json -nt consumers/node/node_modules/.package-lock.json ]; then \
			echo "npm ci (consumers/node)"; (cd consumers/node && npm ci --no-audit --no-fund) || exit 1; \
		else \
			echo "consumers/node: node_modules up to date"; \
		fi; \
	fi

tools:
	GOBIN=$(CURDIR)/build/tools $(GO) install $(RIE_MODULE)@$(RIE_VERSION)

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
	$(GO) test -run='^$$' -bench=. -benchmem ./pkg/... ./internal/initcost/

# Not part of test: minutes of moto time. Flags (or LOADTEST_* variables): build/bin/loadtest -h.
LOADTEST_ARGS ?=
loadtest: deps
	$(GO) build -o build/bin/loadtest ./internal/loadtest/cmd/loadtest
	./build/bin/loadtest $(LOADTEST_ARGS)

# The local programs are built into build/bin (not `go run`, whose temporary build
# directory outlives an interrupted run); each builds the bootstrap and the pinned
# aws-lambda-rie itself and says so.
build/bin/%: FORCE
	@echo "▶ go build -o $@ ./internal/cmd/$* (with an empty Go cache this first downloads the modules and compiles the AWS SDK: minutes on 2 cores)"
	@$(GO) build -o $@ ./internal/cmd/$*

demo: deps build/bin/demo
	./build/bin/demo

local: deps build/bin/local
	./build/bin/local $(LOCAL_ARGS)

invoke: deps build/bin/local
	./build/bin/local -invoke $(EVENT)

sam-invoke:
	@if command -v sam >/dev/null 2>&1 && docker info >/dev/null 2>&1; then \
		sam build && sam local invoke RefresherFunction -e $(EVENT); \
	else \
		echo "sam local invoke needs the SAM CLI and a Docker daemon; 'make invoke' runs the same bootstrap under the same emulator (aws-lambda-rie) without Docker" >&2; exit 1; \
	fi

FORCE:

deploy:
	sam build
	sam deploy

clean:
	rm -rf build .aws-sam
