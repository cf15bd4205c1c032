#!/usr/bin/env bash
# `make test` after the build: every test, in two runs of `swift test`, then one closing line
# that counts both ("N passed, N failed").
# The browser and the package builder run after the rest, not beside it: on two cores their
# bursts of CPU starve the integration tests that run beside them.
set -uo pipefail
SWIFT=${SWIFT:-swift}
solo='StatusPageBrowserTests|DebianPackageTests'
log=$(mktemp)
trap 'rm -f "$log"' EXIT

status=0
"$SWIFT" test --skip-build --skip "$solo" 2>&1 | tee -a "$log" || status=1
"$SWIFT" test --skip-build --filter "$solo" 2>&1 | tee -a "$log" || status=1

# Swift Testing's summary of each run: "Test run with N tests in M suites passed after ..." or
# "... failed after ... with K issues"; a failed test is one "✘ Test name() failed after" line.
ran=$(grep -Eo 'Test run with [0-9]+ tests?' "$log" | awk '{ sum += $4 } END { print sum + 0 }')
failed=$(grep -Ec '✘ Test [^ ]+ failed after' "$log" || true)
skipped=$(grep -Ec 'Test [^ ]+ skipped' "$log" || true)
if [ -z "$ran" ] || [ "$ran" -eq 0 ]; then
    echo "make test: no test ran" >&2
    exit 1
fi
[ "$status" -ne 0 ] && [ "$failed" -eq 0 ] && failed=1   # a crash leaves no ✘ line
echo "make test: $((ran - failed - skipped)) passed, $failed failed, $skipped skipped"
exit "$status"
