#!/usr/bin/env python3
"""The shared tier's own figures, loopback only: a shared-tier hit (memory miss, Redis hit)
against a memory hit and an upstream miss, and memory hits with the shared tier on against off.

Three pixxel-proxy instances over one pixxel-sim (no latency): A and B share a redis-server of
the benchmark's own, C has no shared tier. A fetches every job detail once (upstream misses,
timed), then B reads each once (shared-tier hits, timed), then again (memory hits, timed), one
request at a time and then from THREADS clients at once. Finally wrk measures memory hits on one
detail through B (shared on) and C (shared off) alternately, ROUNDS times each: the memory hit
path must not notice Redis.

Usage: bench/shared.py [--out FILE]. Knobs: SHARED_JOBS (default 2000), SHARED_THREADS (8),
BENCH_SECONDS (wrk run, default 5), SHARED_ROUNDS (3). Needs .build/release, redis-server, wrk.
"""
import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from economy import BIN, HOST, free_port, http_get, stop_all, wait_until  # noqa: E402

SIM_KEY = "shared-bench-key"


def timed_reads(port, headers, targets, threads):
    """Reads every target once over keep-alive connections; returns (latencies in ms, seconds, errors)."""
    latencies, errors = [], [0]
    lock = threading.Lock()
    chunks = [targets[i::threads] for i in range(threads)]

    def worker(chunk):
        conn = http.client.HTTPConnection(HOST, port, timeout=10)
        mine = []
        for target in chunk:
            started = time.perf_counter()
            conn.request("GET", target, headers=headers)
            response = conn.getresponse()
            response.read()
            mine.append((time.perf_counter() - started) * 1000)
            if response.status != 200:
                with lock:
                    errors[0] += 1
        conn.close()
        with lock:
            latencies.extend(mine)

    started = time.perf_counter()
    pool = [threading.Thread(target=worker, args=(chunk,)) for chunk in chunks]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return latencies, time.perf_counter() - started, errors[0]


def summary(name, latencies, seconds):
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return name, len(latencies) / seconds, statistics.median(ordered), p99


def wrk(port, target, token, seconds):
    out = subprocess.run(["wrk", "-t1", "-c32", f"-d{seconds}s", "-H", f"Authorization: Bearer {token}", f"http://{HOST}:{port}{target}"],
                         capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1])
    raise SystemExit(f"shared: wrk printed no rate: {out}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out")
    args = parser.parse_args()
    jobs_wanted = int(os.environ.get("SHARED_JOBS", "2000"))
    threads = int(os.environ.get("SHARED_THREADS", "8"))
    seconds = int(os.environ.get("BENCH_SECONDS", "5"))
    rounds = int(os.environ.get("SHARED_ROUNDS", "3"))
    scratch = tempfile.mkdtemp(prefix="pixxel-shared-bench-")
    processes = []
    try:
        sim_port, redis_port = free_port(), free_port()
        workflows = max(1, jobs_wanted // 100)
        processes.append(subprocess.Popen(
            [os.path.join(BIN, "pixxel-sim"), "--host", HOST, "--port", str(sim_port), "--api-key", SIM_KEY,
             "--workflows", str(workflows), "--jobs", "100", "--pending-seconds", "0", "--running-seconds", "0"],
            stderr=subprocess.DEVNULL))
        processes.append(subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", HOST, "--save", "", "--appendonly", "no",
                                           "--logfile", ""], stdout=subprocess.DEVNULL))
        sim_headers = {"Authorization": SIM_KEY}
        if not wait_until(lambda: http_get(sim_port, "/_sim/workflows", sim_headers)[0] == 200):
            raise SystemExit("shared: pixxel-sim did not start")
        clients = os.path.join(scratch, "clients")
        token = subprocess.run([os.path.join(BIN, "pixxel-proxy"), "token", "add", "bench", "--scopes", "read,admin", "--clients-file", clients],
                               capture_output=True, text=True, check=True).stdout.strip()
        headers = {"Authorization": f"Bearer {token}"}
        ports = {}
        for name, shared in [("A", True), ("B", True), ("C", False)]:
            ports[name] = free_port()
            env = dict(os.environ, PIXXEL_PROXY_LISTEN_HOST=HOST, PIXXEL_PROXY_LISTEN_PORT=str(ports[name]),
                       PIXXEL_PROXY_UPSTREAM_URL=f"http://{HOST}:{sim_port}", PIXXEL_API_KEY=SIM_KEY,
                       PIXXEL_PROXY_AUTH_CLIENTS_FILE=clients, PIXXEL_PROXY_CACHE_DIRECTORY=os.path.join(scratch, f"cache-{name}"),
                       PIXXEL_PROXY_UPSTREAM_REQUESTS_PER_SECOND="0", PIXXEL_PROXY_LOG_LEVEL="warning",
                       PIXXEL_PROXY_SHARED_TIMEOUT_MS="200")
            if shared:
                env["PIXXEL_PROXY_SHARED_REDIS_URL"] = f"redis://{HOST}:{redis_port}"
            processes.append(subprocess.Popen([os.path.join(BIN, "pixxel-proxy"), "serve"], env=env,
                                              stderr=open(os.path.join(scratch, f"{name}.log"), "wb")))

        def state(port):
            status, body = http_get(port, "/admin/stats", headers)
            return json.loads(body)["shared"]["state"] if status == 200 else None
        if not (wait_until(lambda: state(ports["A"]) == "up") and wait_until(lambda: state(ports["B"]) == "up")
                and wait_until(lambda: state(ports["C"]) == "off")):
            raise SystemExit("shared: the instances did not start or join Redis")

        targets = []
        for w in json.loads(http_get(sim_port, "/_sim/workflows", sim_headers)[1])["workflows"]:
            for job in json.loads(http_get(sim_port, f"/v0/workflows/{w}/jobs", sim_headers)[1])["jobs"]:
                targets.append(f"/v0/workflows/{w}/jobs/{job['id']}")
        targets = targets[:jobs_wanted]
        half = len(targets) // 2
        rows = []
        fetched = 0
        # One client at a time, then THREADS at once, each on details not read before.
        for label, subset, parallel in [("1 client", targets[:half], 1), (f"{threads} clients", targets[half:], threads)]:
            latencies, took, errors = timed_reads(ports["A"], headers, subset, parallel)
            rows.append(summary(f"upstream miss (A), {label}", latencies, took) + (errors,))
            # A's stores reach Redis just after its answers: B reads once they are all there.
            fetched += len(subset)
            wait_until(lambda: json.loads(http_get(ports["A"], "/admin/stats", headers)[1])["shared"]["stores"] >= fetched)
            latencies, took, errors = timed_reads(ports["B"], headers, subset, parallel)
            rows.append(summary(f"shared-tier hit (B), {label}", latencies, took) + (errors,))
            latencies, took, errors = timed_reads(ports["B"], headers, subset, parallel)
            rows.append(summary(f"memory hit (B), {label}", latencies, took) + (errors,))
        shared_hits = json.loads(http_get(ports["B"], "/admin/stats", headers)[1])["shared_hits"]

        # The memory hit path with the shared tier on (B) and off (C), alternately.
        hot = targets[0]
        for port in (ports["B"], ports["C"]):
            http_get(port, hot, headers)
        on, off = [], []
        for _ in range(rounds):
            on.append(wrk(ports["B"], hot, token, seconds))
            off.append(wrk(ports["C"], hot, token, seconds))

        lines = ["", f"### Shared tier: hits from Redis ({len(targets)} job details, Python clients over keep-alive, loopback)", "",
                 "| read | requests/s | p50 | p99 | errors |", "| --- | ---: | ---: | ---: | ---: |"]
        for name, rate, p50, p99, errors in rows:
            lines.append(f"| {name} | {rate:.0f} | {p50:.2f} ms | {p99:.2f} ms | {errors} |")
        lines += ["", f"B counted {shared_hits} shared-tier hits.", "",
                  f"Memory hits on one detail, wrk -c32, {seconds} s x {rounds} alternately: shared tier on {statistics.median(on):.0f} req/s, "
                  f"off {statistics.median(off):.0f} req/s: **{statistics.median(on) / statistics.median(off):.2f}x** "
                  f"(runs on: {', '.join(f'{x:.0f}' for x in on)}; off: {', '.join(f'{x:.0f}' for x in off)}).", ""]
        table = "\n".join(lines) + "\n"
        print(table)
        if args.out:
            with open(args.out, "a") as f:
                f.write(table)
    finally:
        stop_all(processes)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
