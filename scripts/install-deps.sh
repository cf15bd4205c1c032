#!/usr/bin/env bash
# Installs the system packages the build, the demo and the tests need, if any is missing.
# --for-tests adds what only `make test` uses (a browser for the status page, promtool, the
# Debian packaging tools and lintian, nginx as the bench's peer). A tool among those that cannot
# be installed is reported, and the tests that need it say they were skipped; under
# PIXXEL_TESTS_REQUIRE_ALL=1 (.ci/run sets it) it fails the run instead, naming what to install.
set -euo pipefail
for_tests=false
[ "${1:-}" = "--for-tests" ] && for_tests=true

if ! command -v swift >/dev/null 2>&1; then
    echo "install-deps: swift is not on PATH; install Swift 6.2 or newer (https://swift.org/install)" >&2
    exit 1
fi

missing=()
pkg-config --exists libevent libevent_openssl libevent_pthreads 2>/dev/null || missing+=(libevent-dev)
pkg-config --exists openssl 2>/dev/null || missing+=(libssl-dev)
pkg-config --exists sqlite3 2>/dev/null || missing+=(libsqlite3-dev)
pkg-config --exists hiredis 2>/dev/null || missing+=(libhiredis-dev)
pkg-config --exists zlib 2>/dev/null || missing+=(zlib1g-dev)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)   # tests make their own CA with it
command -v curl >/dev/null 2>&1 || missing+=(curl)         # make run checks the simulator with it
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)   # make test verifies the unit file
optional=()
if $for_tests; then
    command -v chromium >/dev/null 2>&1 || optional+=(chromium)         # the status page in a browser
    command -v node >/dev/null 2>&1 || optional+=(nodejs)               # drives it (DevTools over a pipe)
    command -v promtool >/dev/null 2>&1 || optional+=(prometheus)       # checks the alert rules
    command -v dpkg-shlibdeps >/dev/null 2>&1 || optional+=(dpkg-dev)   # the Debian package's Depends
    command -v lintian >/dev/null 2>&1 || optional+=(lintian)           # checks the Debian package
    command -v redis-server >/dev/null 2>&1 || optional+=(redis-server) # the shared tier's tests start their own
    [ -x /usr/sbin/nginx ] || optional+=(nginx-light)                   # the bench's peer, checked as configured
fi
[ ${#missing[@]} -eq 0 ] && [ ${#optional[@]} -eq 0 ] && exit 0

require_all=false
[ "${PIXXEL_TESTS_REQUIRE_ALL:-}" = 1 ] && require_all=true

# What the tests need but the build does not: where it cannot be installed, the tests that need
# it say they were skipped; under PIXXEL_TESTS_REQUIRE_ALL=1 (.ci/run) the run fails instead.
cannot_install_optional() {
    if $require_all; then
        echo "install-deps: could not install $*; PIXXEL_TESTS_REQUIRE_ALL=1 runs every test, so install them (apt-get install $*) and run again" >&2
        exit 1
    fi
    echo "install-deps: could not install $*; the tests that need it will say they were skipped" >&2
}

sudo=""
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
        [ ${#missing[@]} -eq 0 ] || { echo "install-deps: need root (or sudo) to install ${missing[*]}" >&2; exit 1; }
        cannot_install_optional "${optional[@]}"
        exit 0
    fi
    sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
if ! $sudo apt-get update -qq; then
    [ ${#missing[@]} -eq 0 ] || { echo "install-deps: apt-get update failed; cannot install ${missing[*]}" >&2; exit 1; }
    cannot_install_optional "${optional[@]}"
    exit 0
fi
if [ ${#missing[@]} -gt 0 ]; then
    echo "install-deps: installing ${missing[*]}" >&2
    $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
not_installed=()
for package in "${optional[@]}"; do
    echo "install-deps: installing $package (for the tests)" >&2
    $sudo apt-get install -y -qq --no-install-recommends "$package" >/dev/null || not_installed+=("$package")
done
[ ${#not_installed[@]} -eq 0 ] || cannot_install_optional "${not_installed[@]}"
