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
counts=()
for run in skip filter; do
    before=$(wc -l < "$log")
    "$SWIFT" test --skip-build --$run "$solo" 2>&1 | tee -a "$log" || status=1
    # Swift Testing's summary of the run: "Test run with N tests in M suites passed after ...".
    counts+=("$(tail -n +"$((before + 1))" "$log" | grep -Eo 'Test run with [0-9]+ tests?' | awk '{ sum += $4 } END { print sum + 0 }')")
done

ran=$((counts[0] + counts[1]))
# A failed test is one "✘ Test name() failed after" line. A skipped suite is one "Suite X
# skipped" line and its tests are not counted in the summary: each such suite counts as one.
failed=$(grep -Ec '✘ Test [^ ]+ failed after' "$log" || true)
skipped_tests=$(grep -Ec ' Test [^ ]+ skipped' "$log" || true)
skipped_suites=$(grep -Ec ' Suite [^ ]+ skipped' "$log" || true)
if [ "${counts[0]}" -eq 0 ] || [ "${counts[1]}" -eq 0 ]; then
    echo "make test: a run of swift test ran no test (${counts[0]} and ${counts[1]})" >&2
    exit 1
fi
[ "$status" -ne 0 ] && [ "$failed" -eq 0 ] && failed=1   # a crash leaves no ✘ line
echo "make test: $((ran - failed - skipped_tests)) passed, $failed failed, $((skipped_tests + skipped_suites)) skipped"
exit "$status"
