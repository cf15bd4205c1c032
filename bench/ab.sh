#!/usr/bin/env bash
# Hit throughput of two pixxel-proxy builds side by side, loopback only: `bench/ab.sh OLD NEW`
# (paths to pixxel-proxy binaries; pixxel-sim from .build/release). Both front one pixxel-sim,
# are warmed, then measured alternately with wrk (detail, list and filtered hits at 64
# connections, AB_ROUNDS rounds of AB_SECONDS each), so a drift of the machine hits both.
# Prints req/s and CPU time per answered request (utime+stime of the proxy from /proc over the
# counted wrk run: far steadier than req/s on a shared machine) per run, and the NEW/OLD ratio
# of the medians of each. AB_NGINX=1 measures nginx's proxy_cache too (bench/nginx.conf.in, one
# worker, the same token check), in the same rounds, and adds nginx's CPU per request and the
# nginx/new ratio (above 1: the new build spends less CPU per hit than nginx). Bounded: about
# 3 cases (AB_CASES, default "detail list filtered") x 2 builds (3 with nginx) x AB_ROUNDS x AB_SECONDS.
# AB_SYSCALLS=1 then counts the system calls of each server per keep-alive hit (strace -c -f over
# AB_SYSCALL_HITS sequential hits on one connection, default 2000), by call.
set -euo pipefail
cd "$(dirname "$0")/.."

OLD=${1:?usage: bench/ab.sh OLD_BINARY NEW_BINARY}
NEW=${2:?usage: bench/ab.sh OLD_BINARY NEW_BINARY}
ROUNDS=${AB_ROUNDS:-3}
SECONDS_PER_RUN=${AB_SECONDS:-5}
CONNECTIONS=${AB_CONNECTIONS:-64}
HOST=127.0.0.1
SIM_PORT=18811 OLD_PORT=18812 NEW_PORT=18813 NGINX_PORT=18814
OUT=bench/out/ab
API_KEY=bench-sim-key

command -v wrk >/dev/null || { echo "ab: wrk is missing (make bench installs it)" >&2; exit 1; }
rm -rf "$OUT"
mkdir -p "$OUT"
PIDS=()
trap 'for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true' EXIT

wait_for() {  # url [header]
    for _ in $(seq 1 200); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' -H "${2:-X-AB: 1}" "$1" || true)" = "200" ] && return 0
        sleep 0.05
    done
    echo "ab: $1 never answered" >&2
    exit 1
}

.build/release/pixxel-sim --host $HOST --port $SIM_PORT --api-key $API_KEY --workflows 3 --jobs 50 >"$OUT/sim.log" 2>&1 &
PIDS+=($!)
wait_for "http://$HOST:$SIM_PORT/_sim/workflows" "Authorization: $API_KEY"
"$NEW" token add ab --scopes read --clients-file "$OUT/clients" >"$OUT/token" 2>/dev/null
TOKEN=$(cat "$OUT/token")

start() {  # binary port name
    env PIXXEL_PROXY_LISTEN_HOST=$HOST PIXXEL_PROXY_LISTEN_PORT=$2 \
        PIXXEL_PROXY_UPSTREAM_URL="http://$HOST:$SIM_PORT" PIXXEL_API_KEY=$API_KEY \
        PIXXEL_PROXY_UPSTREAM_REQUESTS_PER_SECOND=0 PIXXEL_PROXY_CACHE_TTL_JOB_LIST_SECONDS=600 \
        PIXXEL_PROXY_CACHE_TTL_ACTIVE_JOB_SECONDS=600 PIXXEL_PROXY_CACHE_DIRECTORY="$OUT/cache-$3" \
        PIXXEL_PROXY_AUTH_CLIENTS_FILE="$OUT/clients" PIXXEL_PROXY_LOG_LEVEL=info \
        $PIN_PROXY "$1" serve >"$OUT/$3.log" 2>&1 &
    PIDS+=($!)
    PROXY_PIDS[$2]=$!
    wait_for "http://$HOST:$2/healthz"
}
declare -A PROXY_PIDS
# With two cores or more allowed, the proxies share the first and wrk has the second (AB_PIN=0:
# no pinning): a process moved between cores mid-run is most of the noise in CPU per request.
PIN_PROXY="" PIN_WRK=""
ALLOWED=($(python3 -c 'import os; print(*sorted(os.sched_getaffinity(0)))' 2>/dev/null || true))
if [ "${AB_PIN:-1}" = 1 ] && [ "${#ALLOWED[@]}" -ge 2 ] && command -v taskset >/dev/null; then
    PIN_PROXY="taskset -c ${ALLOWED[0]}" PIN_WRK="taskset -c ${ALLOWED[1]}"
fi
start "$OLD" $OLD_PORT old
start "$NEW" $NEW_PORT new
TICKS=$(getconf CLK_TCK)
if [ "${AB_NGINX:-0}" = 1 ]; then
    mkdir -p "$OUT/nginx/temp" "$OUT/nginx/cache"
    sed -e "s|@DIR@|$PWD/$OUT/nginx|g" -e "s|@WORKERS@|1|" -e "s|@SIM_PORT@|$SIM_PORT|" \
        -e "s|@NGINX_PORT@|$NGINX_PORT|" -e "s|@TOKEN@|$TOKEN|" -e "s|@API_KEY@|$API_KEY|" \
        bench/nginx.conf.in > "$OUT/nginx/nginx.conf"
    $PIN_PROXY /usr/sbin/nginx -p "$PWD/$OUT/nginx" -c "$PWD/$OUT/nginx/nginx.conf" -e "$PWD/$OUT/nginx/error.log" &
    PIDS+=($!)
    wait_for "http://$HOST:$NGINX_PORT/v0/workflows" "Authorization: Bearer $TOKEN"
    # The worker answers; its CPU is what is measured.
    PROXY_PIDS[$NGINX_PORT]=$(pgrep -P "$!" | head -n 1)
fi

WORKFLOW=$(sed -n 's/^pixxel-sim: workflow //p' "$OUT/sim.log" | head -n 1)
JOB=$(curl -s -H "Authorization: $TOKEN" "http://$HOST:$NEW_PORT/v0/workflows/$WORKFLOW/jobs" | sed -n 's/.*"id":"\([^"]*\)".*/\1/p' | head -n 1)
declare -A PATHS=([detail]="/v0/workflows/$WORKFLOW/jobs/$JOB" [list]="/v0/workflows/$WORKFLOW/jobs"
                  [filtered]="/v0/workflows/$WORKFLOW/jobs?status=completed")
# Every target is sent "Bearer TOKEN", the form nginx's check compares.
AUTH="Authorization: Bearer $TOKEN"
for port in $OLD_PORT $NEW_PORT ${PROXY_PIDS[$NGINX_PORT]:+$NGINX_PORT}; do
    for path in "${PATHS[@]}"; do
        for _ in 1 2 3; do curl -s -o /dev/null -H "$AUTH" "http://$HOST:$port$path"; done
        curl -s -D - -o /dev/null -H "$AUTH" "http://$HOST:$port$path" | grep -qiE '^cache-status: (pixxel-proxy; hit|HIT)' \
            || { echo "ab: $path is not a hit on port $port" >&2; exit 1; }
    done
done

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }  # pid -> utime+stime in clock ticks

run() {  # port path -> "req/s µs-per-request p99-µs"
    local pid=${PROXY_PIDS[$1]} before after
    before=$(cpu_ticks "$pid")
    $PIN_WRK wrk -t1 -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" --latency -H "$AUTH" "http://$HOST:$1$2" >"$OUT/wrk.txt"
    after=$(cpu_ticks "$pid")
    awk -v ticks=$((after - before)) -v hz="$TICKS" '
        function micros(v) { return v ~ /us$/ ? v + 0 : v ~ /ms$/ ? v * 1000 : v ~ /m$/ ? v * 6e7 : v ~ /h$/ ? v * 3.6e9 : v * 1e6 }
        / requests in / { requests = $1 }
        /Requests\/sec/ { rate = $2 }
        $1 == "99%" { p99 = micros($2) }
        END { printf "%d %.1f %d", rate, requests ? ticks / hz * 1e6 / requests : 0, p99 }' "$OUT/wrk.txt"
}
median() { tr ' ' '\n' | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
P99_LINES=()

printf '%-9s %-24s %-24s %-8s %-20s %-20s %-8s' case "old req/s" "new req/s" "new/old" "old µs/req (CPU)" "new µs/req (CPU)" "new/old"
[ -n "${PROXY_PIDS[$NGINX_PORT]:-}" ] && printf ' %-20s %s' "nginx µs/req (CPU)" "nginx/new"
echo
for name in ${AB_CASES:-detail list filtered}; do
    old_rates="" new_rates="" old_cpu="" new_cpu="" nginx_cpu="" old_p99="" new_p99="" nginx_p99=""
    for _ in $(seq 1 "$ROUNDS"); do
        read -r rate cpu p99 <<<"$(run $OLD_PORT "${PATHS[$name]}")"
        old_rates+="$rate " old_cpu+="$cpu " old_p99+="$p99 "
        read -r rate cpu p99 <<<"$(run $NEW_PORT "${PATHS[$name]}")"
        new_rates+="$rate " new_cpu+="$cpu " new_p99+="$p99 "
        if [ -n "${PROXY_PIDS[$NGINX_PORT]:-}" ]; then
            read -r rate cpu p99 <<<"$(run $NGINX_PORT "${PATHS[$name]}")"
            nginx_cpu+="$cpu " nginx_p99+="$p99 "
        fi
    done
    P99_LINES+=("$(printf '%-9s p99 µs, median of %s rounds: old %s, new %s%s' "$name" "$ROUNDS" "$(echo $old_p99 | median)" \
        "$(echo $new_p99 | median)" "${nginx_p99:+, nginx $(echo $nginx_p99 | median)}")")
    ratio() { awk -v n="$(echo $1 | median)" -v o="$(echo $2 | median)" 'BEGIN { printf "%.2f", o ? n / o : 0 }'; }
    printf '%-9s %-24s %-24s %-8s %-20s %-20s %-8s' "$name" "$old_rates" "$new_rates" "$(ratio "$new_rates" "$old_rates")" \
        "$old_cpu" "$new_cpu" "$(ratio "$new_cpu" "$old_cpu")"
    [ -n "$nginx_cpu" ] && printf ' %-20s %s' "$nginx_cpu" "$(ratio "$nginx_cpu" "$new_cpu")"
    echo
done
echo
printf '%s\n' "${P99_LINES[@]}"

# System calls per keep-alive hit: strace counts each server's calls (every thread: the log
# writer's too) while one connection asks for the detail AB_SYSCALL_HITS times in sequence.
if [ "${AB_SYSCALLS:-0}" = 1 ]; then
    command -v strace >/dev/null || { echo "ab: strace is missing (apt-get install strace)" >&2; exit 1; }
    HITS=${AB_SYSCALL_HITS:-2000}
    echo
    echo "system calls per keep-alive detail hit ($HITS hits on one connection; strace -c -f):"
    for port in $OLD_PORT $NEW_PORT ${PROXY_PIDS[$NGINX_PORT]:+$NGINX_PORT}; do
        name=$([ $port = $OLD_PORT ] && echo old || { [ $port = $NEW_PORT ] && echo new || echo nginx; })
        strace -c -f -p "${PROXY_PIDS[$port]}" -o "$OUT/strace-$name.txt" 2>/dev/null &
        tracer=$!
        sleep 0.5  # strace attaches to every thread before the first hit is counted
        python3 bench/keepalive_hits.py "$port" "${PATHS[detail]}" "$AUTH" "$HITS"
        kill -INT "$tracer"; wait "$tracer" 2>/dev/null || true
        awk -v hits="$HITS" -v name="$name" -f bench/strace_per_hit.awk "$OUT/strace-$name.txt"
    done
fi
