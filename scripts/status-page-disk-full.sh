#!/usr/bin/env bash
# The status page with a full disk under the store, as an operator would see it: a 1 MB tmpfs
# as the cache directory (root, and a system that allows mounting it), pixxel-sim with 1,500
# jobs, every job asked for once, then bench's browser check with --expect-verdict FAILING and a
# screenshot in .build/status-page/status-page-disk-full.png. Loopback only (ports 18931-18932).
# Not part of make test: CI machines may not allow the mount. Needs `swift build` first.
set -uo pipefail
cd "$(dirname "$0")/.."
B=.build/debug; D=$(mktemp -d /tmp/pixxel-disk-full.XXXXXX); mkdir -p $D/cache
mount -t tmpfs -o size=1m tmpfs $D/cache || { echo "status-page-disk-full: cannot mount a tmpfs (root needed)" >&2; exit 1; }
trap 'kill $P $SIM 2>/dev/null; wait 2>/dev/null; umount $D/cache 2>/dev/null; rm -rf $D' EXIT
$B/pixxel-proxy token add operator --scopes admin --clients-file $D/clients > $D/op.token 2>/dev/null
$B/pixxel-proxy token add checker --scopes admin --clients-file $D/clients > $D/ck.token 2>/dev/null
$B/pixxel-proxy token add reader --scopes read --clients-file $D/clients > $D/rd.token 2>/dev/null
$B/pixxel-sim --port 18931 --api-key k --workflows 30 --jobs 50 2> $D/sim.log & SIM=$!
until curl -sf -o /dev/null -H 'Authorization: k' http://127.0.0.1:18931/_sim/workflows; do sleep 0.1; done
PIXXEL_PROXY_LISTEN_PORT=18932 PIXXEL_PROXY_UPSTREAM_URL=http://127.0.0.1:18931 PIXXEL_API_KEY=k PIXXEL_PROXY_UPSTREAM_REQUESTS_PER_SECOND=0 \
  PIXXEL_PROXY_CACHE_DIRECTORY=$D/cache PIXXEL_PROXY_AUTH_CLIENTS_FILE=$D/clients $B/pixxel-proxy serve 2> $D/proxy.log & P=$!
until curl -sf -o /dev/null http://127.0.0.1:18932/healthz; do sleep 0.1; done
T=$(cat $D/rd.token)
for w in $(sed -n 's/^pixxel-sim: workflow //p' $D/sim.log); do
  for j in $(curl -s -H "Authorization: Bearer $T" http://127.0.0.1:18932/v0/workflows/$w/jobs | grep -o '"id":"[^"]*","progress"' | cut -d'"' -f4); do
    curl -s -o /dev/null -H "Authorization: Bearer $T" http://127.0.0.1:18932/v0/workflows/$w/jobs/$j
  done
done
df -h $D/cache | tail -1
grep -c "writes to the cache store fail" $D/proxy.log
node Tests/StatusPageBrowser/check-status-page.mjs --url http://127.0.0.1:18932 --token-file $D/op.token --check-token-file $D/ck.token \
  --screenshot "$PWD/.build/status-page/status-page-disk-full.png" --chromium "$(command -v chromium || echo /usr/bin/chromium)" --polling-clients operator,checker --timeout 60 \
  --expect-verdict FAILING --expect-reason "writes to the cache store fail (disk full)" | grep -E '"ok"|"verdict"|"error"'
