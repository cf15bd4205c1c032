# The project's verbs. `make run` and `make test` work on a fresh Debian machine with Swift:
# they install what is missing first (scripts/install-deps.sh).
SHELL := /bin/bash
SWIFT ?= swift

.PHONY: deps build release run test bench clean

deps:
	@scripts/install-deps.sh

build: deps
	$(SWIFT) build

release: deps
	$(SWIFT) build -c release

# Builds, starts pixxel-sim when no API key is configured, prints a working curl line, and
# runs the proxy in the foreground (Ctrl-C stops both).
run: release
	@scripts/run-demo.sh

test: deps
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build

bench:
	@echo "make bench: the benchmark against nginx proxy_cache is not built yet (see bench/README.md)"; exit 1

clean:
	rm -rf .build .run
