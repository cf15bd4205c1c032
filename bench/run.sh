#!/usr/bin/env bash
# `make bench`: pixxel-proxy against nginx's proxy_cache, side by side in one run, loopback only.
#
# Both front the same pixxel-sim, check the same client token, and are warmed before wrk runs;
# the two are measured alternately, case by case, so that a drift of the machine hits both.
# Then: peak RSS of the proxy with 100k cached job details against their payload bytes, and
# the time to ready (and to a first disk hit) with 1M entries in the disk store.
#
# The headline is CPU time per answered hit (utime + stime from /proc over counted wrk runs,
# BENCH_CPU_ROUNDS alternated rounds, default 5) beside nginx's, as a ratio.
#
# Knobs: BENCH_SECONDS (per wrk run, default 5), BENCH_CONNECTIONS (default "1 64 256"),
# BENCH_WORKERS (nginx worker_processes and the proxy's listen.workers, default 1),
# BENCH_SKIP_EXTRAS=1 (only the wrk table), BENCH_SKIP_DOWNLOAD=1, DOWNLOAD_BYTES, DOWNLOAD_ROUNDS,
# BENCH_SKIP_ECONOMY=1, ECONOMY_SECONDS, BENCH_SKIP_SHARED=1 (SHARED_JOBS, SHARED_THREADS, SHARED_ROUNDS),
# BENCH_SKIP_WATCH=1 (WATCH_JOBS, WATCH_RUNNING_SECONDS). Writes bench/out/ (scratch) and bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${BENCH_SECONDS:-5}
CONNECTIONS=${BENCH_CONNECTIONS:-"1 64 256"}
WORKERS=${BENCH_WORKERS:-1}
SIM_PORT=${BENCH_SIM_PORT:-18801}
PROXY_PORT=${BENCH_PROXY_PORT:-18802}
NGINX_PORT=${BENCH_NGINX_PORT:-18803}
HOST=127.0.0.1
BIN=.build/release
OUT=bench/out
API_KEY=bench-sim-key

need_packages=()
command -v wrk >/dev/null || need_packages+=(wrk)
[ -x /usr/sbin/nginx ] || need_packages+=(nginx-light)
command -v sqlite3 >/dev/null || need_packages+=(sqlite3)
command -v python3 >/dev/null || need_packages+=(python3)
command -v strace >/dev/null || need_packages+=(strace)
command -v cc >/dev/null || need_packages+=(gcc)
if [ ${#need_packages[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "bench: missing ${need_packages[*]}; run as root or install them (apt-get install ${need_packages[*]})" >&2
        exit 1
    fi
    echo "bench: installing ${need_packages[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_packages[@]}" >/dev/null
    # Debian starts the packaged nginx on port 80; the bench runs its own.
    if command -v systemctl >/dev/null && systemctl is-active --quiet nginx 2>/dev/null; then systemctl stop nginx || true; fi
fi

rm -rf "$OUT"
mkdir -p "$OUT/nginx/temp" "$OUT/nginx/cache"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

# Waits until `curl URL` answers STATUS (at most 10 s).
wait_for() {
    local url=$1 status=$2 header=${3:-X-Bench: 1}
    for _ in $(seq 1 200); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' -H "$header" "$url" || true)" = "$status" ] && return 0
        sleep 0.05
    done
    echo "bench: $url never answered $status" >&2
    exit 1
}

start_sim() {  # workflows, jobs per workflow, log file
    "$BIN/pixxel-sim" --host $HOST --port $SIM_PORT --api-key $API_KEY --workflows "$1" --jobs "$2" 2> "$3" &
    SIM_PID=$!
    PIDS+=($SIM_PID)
    wait_for "http://$HOST:$SIM_PORT/_sim/workflows" 200 "Authorization: $API_KEY"
}

# The proxy as deployed, except: an unlimited upstream budget (the sim is local) and a list
# TTL as long as nginx's proxy_cache_valid, so both serve hits for the whole run.
start_proxy() {  # cache directory, log file
    env PIXXEL_PROXY_LISTEN_HOST=$HOST PIXXEL_PROXY_LISTEN_PORT=$PROXY_PORT \
        PIXXEL_PROXY_UPSTREAM_URL="http://$HOST:$SIM_PORT" PIXXEL_API_KEY=$API_KEY \
        PIXXEL_PROXY_UPSTREAM_REQUESTS_PER_SECOND=0 PIXXEL_PROXY_UPSTREAM_MAX_CONNECTIONS=16 \
        PIXXEL_PROXY_CACHE_TTL_JOB_LIST_SECONDS=600 PIXXEL_PROXY_CACHE_DIRECTORY="$1" \
        PIXXEL_PROXY_CACHE_MEMORY_MB=1024 PIXXEL_PROXY_AUTH_CLIENTS_FILE="$OUT/clients" \
        ${BENCH_PROXY_ENV:-} "$BIN/pixxel-proxy" serve 2> "$2" &
    PROXY_PID=$!
    PIDS+=($PROXY_PID)
    wait_for "http://$HOST:$PROXY_PORT/readyz" 200
}

stop() {  # pid
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

"$BIN/pixxel-proxy" token add bench --scopes read,admin --clients-file "$OUT/clients" 2>/dev/null > "$OUT/token"
TOKEN=$(cat "$OUT/token")
AUTH="Authorization: Bearer $TOKEN"

start_sim 3 50 "$OUT/sim.log"
WORKFLOW=$(sed -n 's/^pixxel-sim: workflow //p' "$OUT/sim.log" | head -n 1)
LIST="/v0/workflows/$WORKFLOW/jobs"
JOB=$(curl -s -H "Authorization: $API_KEY" "http://$HOST:$SIM_PORT$LIST" \
    | grep -o '"id":"[^"]*","progress":"100%","status":"completed"' | head -n 1 | cut -d'"' -f4)
DETAIL="$LIST/$JOB"
FILTERED="$LIST?status=completed"

start_proxy "$OUT/proxy-cache" "$OUT/proxy.log"
sed -e "s|@DIR@|$PWD/$OUT/nginx|g" -e "s|@WORKERS@|$WORKERS|" -e "s|@SIM_PORT@|$SIM_PORT|" \
    -e "s|@NGINX_PORT@|$NGINX_PORT|" -e "s|@TOKEN@|$TOKEN|" -e "s|@API_KEY@|$API_KEY|" \
    bench/nginx.conf.in > "$OUT/nginx/nginx.conf"
/usr/sbin/nginx -p "$PWD/$OUT/nginx" -c "$PWD/$OUT/nginx/nginx.conf" -e "$PWD/$OUT/nginx/error.log" &
PIDS+=($!)
wait_for "http://$HOST:$NGINX_PORT/v0/" 401

# Warm both and check that the second request is a hit on each side.
for path in "$DETAIL" "$LIST" "$FILTERED"; do
    for _ in 1 2; do
        curl -s -o /dev/null -H "$AUTH" "http://$HOST:$PROXY_PORT$path"
        curl -s -o /dev/null -H "$AUTH" "http://$HOST:$NGINX_PORT$path"
    done
    curl -s -D - -o /dev/null -H "$AUTH" "http://$HOST:$PROXY_PORT$path" | grep -qi '^cache-status: pixxel-proxy; hit' \
        || { echo "bench: pixxel-proxy does not answer $path from cache" >&2; exit 1; }
    curl -s -D - -o /dev/null -H "$AUTH" "http://$HOST:$NGINX_PORT$path" | grep -qi '^cache-status: HIT' \
        || { echo "bench: nginx does not answer $path from cache" >&2; exit 1; }
done
printf '%s\n' "$DETAIL" > "$OUT/paths-detail"
printf '%s\n' "$LIST" > "$OUT/paths-list"
printf '%s\n' "$FILTERED" > "$OUT/paths-filtered"
printf '%s\n' "$LIST" "$DETAIL" "$FILTERED" > "$OUT/paths-mix"
LIST_BYTES=$(curl -s -H "$AUTH" "http://$HOST:$PROXY_PORT$LIST" | wc -c)
DETAIL_BYTES=$(curl -s -H "$AUTH" "http://$HOST:$PROXY_PORT$DETAIL" | wc -c)
FILTERED_BYTES=$(curl -s -H "$AUTH" "http://$HOST:$PROXY_PORT$FILTERED" | wc -c)

# One wrk run; prints "req/s p50_us p99_us socket_errors status_errors requests".
measure() {  # port, case, connections
    local miss=0
    [ "$2" = mix ] && miss=10
    BENCH_PATHS="$OUT/paths-$2" BENCH_TOKEN=$TOKEN BENCH_MISS_PERCENT=$miss BENCH_RUN_ID="$1-$3-$(date +%s%N)" \
        wrk -t1 -c"$3" -d"${DURATION}s" -s bench/wrk.lua "http://$HOST:$1" | sed -n 's/^RESULT //p'
}

# The headline: CPU time per answered hit, utime + stime of the serving process from /proc over
# a counted wrk run (far steadier than req/s on a shared machine), pixxel-proxy's event loop
# against nginx's one worker, alternated for BENCH_CPU_ROUNDS rounds (default 5) at 64
# connections; medians, and nginx's CPU per hit over the proxy's.
TICKS=$(getconf CLK_TCK)
NGINX_WORKER=$(pgrep -P "$(cat "$OUT/nginx/nginx.pid")" | head -n 1)
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
cpu_per_hit() {  # port pid case -> "µs_per_request req/s p50 p99"
    local before after rps p50 p99 err status requests
    before=$(cpu_ticks "$2")
    read -r rps p50 p99 err status requests < <(measure "$1" "$3" 64)
    after=$(cpu_ticks "$2")
    awk -v t=$((after - before)) -v hz="$TICKS" -v n="$requests" -v r="$rps" -v a="$p50" -v b="$p99" \
        'BEGIN { printf "%.1f %s %s %s\n", n ? t / hz * 1e6 / n : 0, r, a, b }'
}
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
CPU_ROWS=()
echo
echo "CPU per hit (µs, utime+stime / requests), ${BENCH_CPU_ROUNDS:-5} alternated rounds at 64 connections:"
for case in detail list filtered; do
    p_cpu="" n_cpu="" p_rps="" n_rps="" p_lat="" n_lat=""
    for _ in $(seq 1 "${BENCH_CPU_ROUNDS:-5}"); do
        read -r cpu rps p50 p99 < <(cpu_per_hit $PROXY_PORT "$PROXY_PID" $case)
        p_cpu+="$cpu " p_rps+="$rps " p_lat="$p50 / $p99"
        read -r cpu rps p50 p99 < <(cpu_per_hit $NGINX_PORT "$NGINX_WORKER" $case)
        n_cpu+="$cpu " n_rps+="$rps " n_lat="$p50 / $p99"
    done
    pm=$(echo "$p_cpu" | median) nm=$(echo "$n_cpu" | median)
    ratio=$(awk -v n="$nm" -v p="$pm" 'BEGIN { printf "%.2f", (p > 0 ? n / p : 0) }')
    printf '%-9s proxy %6s (%s)  nginx %6s (%s)  nginx/proxy %s\n' $case "$pm" "$p_cpu" "$nm" "$n_cpu" "$ratio"
    CPU_ROWS+=("| $case | $pm | $(echo "$p_rps" | median) | $p_lat | $nm | $(echo "$n_rps" | median) | $n_lat | **$ratio** |")
done

# Per hit, beside the CPU: system calls of each server (strace -c -f over BENCH_TRACE_HITS
# sequential hits on one kept-alive connection, default 2000), and heap allocations of the proxy
# (bench/alloc-count.c preloaded into a second proxy, warmed, over a counted wrk run at 64
# connections: calls to malloc and friends per answered request).
TRACE_HITS=${BENCH_TRACE_HITS:-2000}
syscalls_per_hit() {  # port pid path name -> "TOTAL per hit: call n ..."
    strace -c -f -p "$2" -o "$OUT/strace-$4.txt" 2>/dev/null &
    local tracer=$!
    sleep 0.5  # strace attaches to every thread before the first hit is counted
    python3 bench/keepalive_hits.py "$1" "$3" "$AUTH" "$TRACE_HITS"
    kill -INT "$tracer"; wait "$tracer" 2>/dev/null || true
    awk -v hits="$TRACE_HITS" -v name="$4" -f bench/strace_per_hit.awk "$OUT/strace-$4.txt" | sed 's/^[^ ]* *//'
}
cc -O2 -shared -fPIC -o "$OUT/alloc-count.so" bench/alloc-count.c
COUNTED_PORT=$((PROXY_PORT + 10))
env PIXXEL_PROXY_LISTEN_HOST=$HOST PIXXEL_PROXY_LISTEN_PORT=$COUNTED_PORT \
    PIXXEL_PROXY_UPSTREAM_URL="http://$HOST:$SIM_PORT" PIXXEL_API_KEY=$API_KEY \
    PIXXEL_PROXY_UPSTREAM_REQUESTS_PER_SECOND=0 PIXXEL_PROXY_CACHE_TTL_JOB_LIST_SECONDS=600 \
    PIXXEL_PROXY_CACHE_DIRECTORY="$OUT/proxy-cache-counted" PIXXEL_PROXY_AUTH_CLIENTS_FILE="$OUT/clients" \
    LD_PRELOAD="$PWD/$OUT/alloc-count.so" ALLOC_COUNT_FILE="$PWD/$OUT/alloc-counts" \
    "$BIN/pixxel-proxy" serve 2> "$OUT/proxy-counted.log" &
COUNTED_PID=$!
PIDS+=($COUNTED_PID)
wait_for "http://$HOST:$COUNTED_PORT/readyz" 200
# Prints "allocations frees" so far; the preloaded counter appends them on signal RTMIN+7.
count_lines() { if [ -f "$1" ]; then wc -l < "$1"; else echo 0; fi; }
alloc_counts() {
    local lines
    lines=$(count_lines "$OUT/alloc-counts")
    kill -s RTMIN+7 "$COUNTED_PID"
    for _ in $(seq 1 100); do
        [ "$(count_lines "$OUT/alloc-counts")" -gt "$lines" ] && break
        sleep 0.01
    done
    tail -n 1 "$OUT/alloc-counts"
}
allocations_per_hit() {  # case -> "allocations_per_request frees_per_request"
    local path a0 f0 a1 f1 requests
    path=$(head -n 1 "$OUT/paths-$1")
    for _ in 1 2 3; do curl -s -o /dev/null -H "$AUTH" "http://$HOST:$COUNTED_PORT$path"; done
    read -r a0 f0 < <(alloc_counts)
    requests=$(measure $COUNTED_PORT "$1" 64 | awk '{ print $6 }')
    read -r a1 f1 < <(alloc_counts)
    awk -v a=$((a1 - a0)) -v f=$((f1 - f0)) -v n="$requests" 'BEGIN { printf "%.2f %.2f\n", n ? a / n : 0, n ? f / n : 0 }'
}
PER_HIT_ROWS=()
echo
echo "per hit: system calls ($TRACE_HITS keep-alive hits, strace -c -f) and the proxy's heap allocations (counted wrk run):"
for case in detail list filtered; do
    path=$(head -n 1 "$OUT/paths-$case")
    p_calls=$(syscalls_per_hit $PROXY_PORT "$PROXY_PID" "$path" "proxy-$case")
    n_calls=$(syscalls_per_hit $NGINX_PORT "$NGINX_WORKER" "$path" "nginx-$case")
    read -r allocations frees < <(allocations_per_hit $case)
    printf '%-9s proxy %s | nginx %s | proxy allocations %s, frees %s\n' $case "$p_calls" "$n_calls" "$allocations" "$frees"
    PER_HIT_ROWS+=("| $case | $p_calls | $n_calls | $allocations | $frees |")
done
stop $COUNTED_PID

ROWS=()
echo
printf '%-9s %5s | %9s %8s %8s | %9s %8s %8s | %6s\n' case conns proxy p50us p99us nginx p50us p99us ratio
for case in detail list filtered mix; do
    for connections in $CONNECTIONS; do
        read -r p_rps p_p50 p_p99 p_err p_status _ < <(measure $PROXY_PORT $case "$connections")
        read -r n_rps n_p50 n_p99 n_err n_status _ < <(measure $NGINX_PORT $case "$connections")
        ratio=$(awk -v a="$p_rps" -v b="$n_rps" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
        note=""
        [ "$p_err$p_status$n_err$n_status" = "0000" ] || note=" errors: proxy $p_err/$p_status nginx $n_err/$n_status"
        printf '%-9s %5s | %9s %8s %8s | %9s %8s %8s | %6s%s\n' \
            $case "$connections" "$p_rps" "$p_p50" "$p_p99" "$n_rps" "$n_p50" "$n_p99" "$ratio" "$note"
        ROWS+=("| $case | $connections | $p_rps | $p_p50 / $p_p99 | $n_rps | $n_p50 / $n_p99 | **$ratio** |$note")
    done
done
PROXY_STATS=$(curl -s -H "$AUTH" "http://$HOST:$PROXY_PORT/admin/stats")
stop $PROXY_PID

EXTRAS=""
if [ "${BENCH_SKIP_EXTRAS:-0}" != 1 ]; then
    # Peak RSS with 100k cached job details (2,000 workflows of 50 jobs), each fetched once.
    stop $SIM_PID
    start_sim 2000 50 "$OUT/sim-100k.log"
    start_proxy "$OUT/proxy-cache-100k" "$OUT/proxy-100k.log"
    BASE_RSS_KB=$(awk '/^VmRSS/ { print $2 }' /proc/$PROXY_PID/status)
    sed -n 's/^pixxel-sim: workflow //p' "$OUT/sim-100k.log" > "$OUT/workflows-100k"
    # The job ids, from the simulator directly (not through the proxy: only details are cached).
    while read -r workflow; do
        curl -s -H "Authorization: $API_KEY" "http://$HOST:$SIM_PORT/v0/workflows/$workflow/jobs" \
            | grep -o '"id":"[^"]*","progress"' | cut -d'"' -f4 | sed "s|^|http://$HOST:$PROXY_PORT/v0/workflows/$workflow/jobs/|"
    done < "$OUT/workflows-100k" > "$OUT/urls-100k"
    DETAILS=$(wc -l < "$OUT/urls-100k")
    # Four curls, each over its share of the URLs on one kept-alive connection.
    split -n l/4 -d "$OUT/urls-100k" "$OUT/urls-100k-part-"
    CURLS=()
    for part in "$OUT"/urls-100k-part-??; do
        sed 's|.*|url = "&"\noutput = "/dev/null"|' "$part" > "$part.curl"
        curl -s -K "$part.curl" -w '%{size_download}\n' -H "$AUTH" > "$part.sizes" &
        CURLS+=($!)
    done
    for pid in "${CURLS[@]}"; do wait "$pid"; done
    PAYLOAD_BYTES=$(cat "$OUT"/urls-100k-part-*.sizes | awk '{ sum += $1 } END { print sum }')
    PEAK_RSS_KB=$(awk '/^VmHWM/ { print $2 }' /proc/$PROXY_PID/status)
    MEMORY_ENTRIES=$(curl -s -H "$AUTH" "http://$HOST:$PROXY_PORT/admin/stats" | grep -o '"memory":{[^}]*}')
    stop $PROXY_PID
    RSS_RATIO=$(awk -v r="$PEAK_RSS_KB" -v p="$PAYLOAD_BYTES" 'BEGIN { printf "%.2f", r * 1024 / p }')
    GROWTH_RATIO=$(awk -v r="$PEAK_RSS_KB" -v b="$BASE_RSS_KB" -v p="$PAYLOAD_BYTES" 'BEGIN { printf "%.2f", (r - b) * 1024 / p }')

    # Time to ready with 1M entries in the disk store: the 100k store, each row cloned under
    # nine more keys, (keys no request names, bytes as real ones).
    STORE="$OUT/proxy-cache-100k/pixxel-proxy-cache.sqlite3"
    sqlite3 "$STORE" "
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 9)
        INSERT INTO entries (key, kind, workflow_id, job_id, body, headers, stored_at, lifetime, last_used, size,
                             updated_at, validated_at, invalidated)
        SELECT key || ' copy ' || i, kind, workflow_id || '-' || i, job_id, body, headers, stored_at, lifetime,
               last_used, size, updated_at, validated_at, invalidated FROM entries, n;
        PRAGMA wal_checkpoint(TRUNCATE);" >/dev/null
    STORE_ENTRIES=$(sqlite3 "$STORE" "SELECT COUNT(*) FROM entries")
    STORE_MB=$(( $(stat -c %s "$STORE") / 1048576 ))
    FIRST_URL=$(head -n 1 "$OUT/urls-100k")
    started=$(date +%s%N)
    start_proxy "$OUT/proxy-cache-100k" "$OUT/proxy-1m.log"
    ready=$(date +%s%N)
    DISK_STATUS=$(curl -s -D - -o /dev/null -H "$AUTH" "$FIRST_URL" | tr -d '\r' | sed -n 's/^[Cc]ache-[Ss]tatus: //p')
    first_hit=$(date +%s%N)
    stop $PROXY_PID
    READY_MS=$(( (ready - started) / 1000000 ))
    FIRST_HIT_MS=$(( (first_hit - started) / 1000000 ))
    EXTRAS="
## Memory and start-up

| measure | value |
| --- | --- |
| job details cached | $DETAILS (payload $PAYLOAD_BYTES bytes) |
| proxy RSS before filling | $BASE_RSS_KB KiB |
| proxy peak RSS (VmHWM) | $PEAK_RSS_KB KiB |
| peak RSS / payload | **$RSS_RATIO** (growth over the empty process / payload: $GROWTH_RATIO) |
| memory tier | \`$MEMORY_ENTRIES\` |
| disk store | $STORE_ENTRIES entries, $STORE_MB MB |
| start to /readyz 200 | $READY_MS ms (polled with curl, so an upper bound) |
| start to first disk hit | $FIRST_HIT_MS ms (Cache-Status: $DISK_STATUS) |
"
    echo "$EXTRAS"
fi

CPU=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
{
    echo "# Benchmark results"
    echo
    echo "Written by \`make bench\` (bench/run.sh) on $(date -u '+%Y-%m-%d %H:%M UTC'): $CPU, $(nproc) cores,"
    echo "$(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(uname -sr); nginx $(/usr/sbin/nginx -v 2>&1 | sed 's|.*/||'),"
    echo "$(wrk -v 2>&1 | head -n 1 | cut -d' ' -f1-2). Loopback only; wrk -t1, ${DURATION}s per run, proxy and nginx alternated;"
    echo "$WORKERS worker(s) each. Bodies: detail $DETAIL_BYTES B, list $LIST_BYTES B (50 jobs), filtered $FILTERED_BYTES B."
    echo "mix = 90% hits over the three paths, 10% misses (a list query with an unknown parameter)."
    echo
    echo "## CPU per cached hit (the headline)"
    echo
    echo "CPU time (utime + stime from \`/proc\`) per answered request over counted wrk runs at 64"
    echo "connections, ${BENCH_CPU_ROUNDS:-5} rounds alternated; medians (latency of the last round)."
    echo "Above 1 in the last column: nginx spends more CPU per hit than pixxel-proxy."
    echo
    echo "| case | pixxel-proxy µs/hit | req/s | p50 / p99 µs | nginx µs/hit | req/s | p50 / p99 µs | nginx / proxy (CPU) |"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
    printf '%s\n' "${CPU_ROWS[@]}"
    echo
    echo "## System calls and allocations per hit"
    echo
    echo "System calls: \`strace -c -f\` on each server over $TRACE_HITS hits asked in turn on one kept-alive"
    echo "connection (\`bench/keepalive_hits.py\`), per hit, with the calls made at least once per 20 hits."
    echo "Allocations: calls to malloc and friends (and to free) per answered request, counted by"
    echo "\`bench/alloc-count.c\` preloaded into a second, warmed proxy over a wrk run at 64 connections"
    echo "(the access-log line is formatted into a batch, not allocated per request)."
    echo
    echo "| case | pixxel-proxy system calls | nginx system calls | proxy allocations | proxy frees |"
    echo "| --- | --- | --- | --- | --- |"
    printf '%s\n' "${PER_HIT_ROWS[@]}"
    echo
    echo "## Throughput"
    echo
    echo "| case | connections | pixxel-proxy req/s | p50 / p99 µs | nginx req/s | p50 / p99 µs | proxy / nginx |"
    echo "| --- | --- | --- | --- | --- | --- | --- |"
    printf '%s\n' "${ROWS[@]}"
    echo "$EXTRAS"
    echo "Proxy counters after the wrk runs: \`$PROXY_STATS\`"
    if [ -f bench/PROFILE.md ]; then echo; cat bench/PROFILE.md; fi
} > bench/RESULTS.md

# The download benchmark: 1 GiB through the streamed pass-through, direct and nginx (bench/download.py).
if [ -z "${BENCH_SKIP_DOWNLOAD:-}" ]; then
    for cleanup_pid in "${PIDS[@]}"; do kill "$cleanup_pid" 2>/dev/null || true; done
    python3 bench/download.py --out bench/RESULTS.md
fi

# The economy benchmark: upstream calls and staleness on a team's workload (bench/economy.py).
if [ -z "${BENCH_SKIP_ECONOMY:-}" ]; then
    for cleanup_pid in "${PIDS[@]}"; do kill "$cleanup_pid" 2>/dev/null || true; done
    python3 bench/economy.py --seconds "${ECONOMY_SECONDS:-40}" --targets direct,nginx,proxy,pair --out bench/RESULTS.md
    if [ -f bench/ECONOMY.md ]; then echo; cat bench/ECONOMY.md; fi >> bench/RESULTS.md
fi

# The shared tier: hits from Redis against memory hits and misses, and memory hits with the
# tier on against off (bench/shared.py; a redis-server of its own on a loopback port).
if [ -z "${BENCH_SKIP_SHARED:-}" ]; then
    command -v redis-server >/dev/null || { apt-get update -qq >/dev/null; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }
    for cleanup_pid in "${PIDS[@]}"; do kill "$cleanup_pid" 2>/dev/null || true; done
    python3 bench/shared.py --out bench/RESULTS.md
fi

# Watching running jobs: a tool waiting for 50 jobs to finish by polling, by long-polling each
# (Prefer: wait) and through one SSE watch of the list (bench/watch.py; a sim and a proxy of its own per way).
if [ -z "${BENCH_SKIP_WATCH:-}" ]; then
    for cleanup_pid in "${PIDS[@]}"; do kill "$cleanup_pid" 2>/dev/null || true; done
    python3 bench/watch.py --bin "$BIN" --out bench/RESULTS.md
fi
echo "bench: wrote bench/RESULTS.md"
