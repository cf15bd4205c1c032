# The project's verbs. `make run` and `make test` work on a fresh Debian machine with Swift:
# they install what is missing first (scripts/install-deps.sh).
SHELL := /bin/bash
SWIFT ?= swift
# The commit the binaries record for pixxel_proxy_build_info (Package.swift reads it). Not named
# PIXXEL_PROXY_*: the proxy refuses unknown variables of its own prefix, and make run passes this on.
PIXXEL_BUILD_COMMIT ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null)
export PIXXEL_BUILD_COMMIT

.PHONY: deps build release run test bench soak fuzz install deb clean

deps:
	@scripts/install-deps.sh

build: deps
	$(SWIFT) build

# Linked as the Debian package links it (deploy/build-deb.sh, with the flags in
# deploy/release-link-flags): the Swift runtime and Foundation inside the binary, full RELRO,
# immediate binding. What run, bench and install start is then what the package ships, and the
# process maps about 5 MiB less than with the toolchain's shared runtime (whose relocations and
# symbol lookups touch most of its pages, few of them used). Linked by the toolchain's lld, whose
# packed relative relocations (DT_RELR, glibc 2.36) take 35 KB where gold's took 2 MB, all read
# at start: 0.7 MiB less resident.
RELEASE_LINK_FLAGS := $(dir $(abspath $(lastword $(MAKEFILE_LIST))))deploy/release-link-flags
RELEASE_LINK = $(shell cat $(RELEASE_LINK_FLAGS))
release: deps
	@test -s $(RELEASE_LINK_FLAGS) || { echo "make: $(RELEASE_LINK_FLAGS) is missing" >&2; exit 1; }
	$(SWIFT) build -c release $(RELEASE_LINK)

# Builds, starts pixxel-sim when no API key is configured, prints a working curl line, and
# runs the proxy in the foreground (Ctrl-C stops both).
run: release
	@scripts/run-demo.sh

# Every test, among them the status page in headless Chromium (it leaves a screenshot in
# .build/status-page/), promtool over the alert rules, the Debian package with lintian and the
# bench's nginx (scripts/run-tests.sh: the browser and the package builder run after the rest).
# A tool a test needs that is missing skips that test with a line naming it; .ci/run sets
# PIXXEL_TESTS_REQUIRE_ALL=1, under which it fails the run instead.
test:
	@scripts/install-deps.sh --for-tests
	$(SWIFT) build --build-tests
	@SWIFT=$(SWIFT) scripts/run-tests.sh

# pixxel-proxy against nginx proxy_cache on loopback, side by side (bench/README.md); writes
# bench/RESULTS.md. A few minutes; BENCH_SECONDS and BENCH_CONNECTIONS shorten it.
bench: release
	bench/run.sh

# A randomized fault soak on loopback (scripts/soak.py): pixxel-sim with changing faults, ~20
# clients of every kind, SIGHUP, kill -9 and SIGTERM restarts; prints a table of invariants and
# exits non-zero on any violation. Bounded: SOAK_SECONDS (default 300). Not part of `make test`.
soak: release
	@command -v python3 >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 >/dev/null; }
	python3 scripts/soak.py

# Installs the binary, the systemd unit, the default configuration and an empty clients file
# (DESTDIR=... stages elsewhere). Idempotent.
install: release
	BIN=.build/release/pixxel-proxy deploy/install.sh

# The Debian package, in .build/deb/: the release binary with the Swift runtime linked in, the
# unit, the configuration and clients file as conffiles (deploy/build-deb.sh, deploy/debian/),
# then lintian, which must report nothing but what deploy/debian/lintian-overrides explains.
deb: deps
	@command -v lintian >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends lintian >/dev/null; }
	@command -v dpkg-shlibdeps >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends dpkg-dev >/dev/null; }
	deb=$$(deploy/build-deb.sh) && lintian --fail-on error,warning "$$deb" && echo "built $$deb; install it with: apt install ./$$deb"

clean:
	rm -rf .build .run

# libFuzzer over the request-target parser, the list filter parser and the upstream-JSON ingest
# (one binary; the first byte of an input picks the target). Bounded: FUZZ_SECONDS (default 60).
# New inputs that reach new code are added to Fuzz/corpus, which `make test` replays.
FUZZ_SECONDS ?= 60
fuzz: deps
	$(SWIFT) build --scratch-path .build-fuzz --product pixxel-fuzz -Xswiftc -sanitize=fuzzer,address -Xswiftc -DFUZZING
	mkdir -p .build-fuzz/artifacts
	.build-fuzz/debug/pixxel-fuzz Fuzz/corpus -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -artifact_prefix=.build-fuzz/artifacts/
