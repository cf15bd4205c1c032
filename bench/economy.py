#!/usr/bin/env python3
"""The economy benchmark: upstream calls and staleness on a team's workload, loopback only.

The same workload runs against pixxel-sim directly, through nginx proxy_cache (lock,
background update, stale while updating) and through pixxel-proxy, one after the other, each
with a warm cache and the same freshness bound. For each it reports the client requests, the
upstream calls (lists and details apart), the floor (one list call per freshness window in
which a workflow's list was read, plus one detail call per new job version read), the share of
answers showing a job older than the simulator's truth at that moment, and that staleness at
p50/p99/max. Staleness is measured against /_sim/truth: each job's versions follow from its
schedule, so an answer's `updated_at` tells which version it is and since when a newer existed.

Workload (per run, ECONOMY_SECONDS, default 40): 4 workflows x 30 jobs, 12 of them running
and changing every 15 s; two dashboards polling each workflow's `?status=running` list every
2 s and its full list every 6 s; watchers polling the 12 running jobs' details every second;
an auditor reading finished jobs; a reporter with created_on + created_by filters.

Target `pair`: two pixxel-proxy instances sharing one Redis (a redis-server of the benchmark's
own on a loopback port), the clients split between them round robin; the table adds its calls
as a ratio of one instance's (the shared tier's promise: at most 1.1x).

Usage: bench/economy.py [--seconds N] [--targets direct,nginx,proxy,pair] [--out FILE]
Needs .build/release (make release) and, for nginx, /usr/sbin/nginx.
"""
import argparse
import datetime
import http.client
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, ".build", "release")
HOST = "127.0.0.1"
SIM_KEY = "economy-sim-key"
BOUND = 5  # seconds: the freshness bound for lists and running jobs, on every target
STEP = 15  # seconds between two versions of a running job

NGINX_CONF = """
{user}daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    log_format economy "$request_uri $upstream_cache_status $status";
    access_log {dir}/access.log economy;
    proxy_temp_path {dir}/temp;
    client_body_temp_path {dir}/temp;
    proxy_cache_path {dir}/cache levels=1:2 keys_zone=economy:16m max_size=1g inactive=1h use_temp_path=off;
    server {{
        listen {host}:{port};
        location /v0/ {{
            if ($http_authorization != "Bearer {token}") {{ return 401; }}
            proxy_pass http://{host}:{sim_port};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Authorization "{key}";
            proxy_cache economy;
            proxy_cache_key $request_uri;
            proxy_cache_valid 200 {bound}s;
            proxy_cache_lock on;
            proxy_cache_use_stale updating error timeout http_500 http_502 http_503 http_504;
            proxy_cache_background_update on;
            add_header Cache-Status $upstream_cache_status;
        }}
    }}
}}
"""


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def stop_all(processes):
    """Terminates the benchmark's processes, killing any that linger past 10 s."""
    for p in processes:
        p.terminate()
    for p in processes:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()


def parse_time(text):
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except (ValueError, AttributeError):
        return None


def wait_until(predicate, seconds=20):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


def http_get(port, target, headers):
    c = http.client.HTTPConnection(HOST, port, timeout=10)
    c.request("GET", target, headers=headers)
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, body


class Truth:
    """Each job's versions from its schedule: created, started, every STEP while running, finished."""

    def __init__(self, jobs):
        self.versions = {}
        for job in jobs:
            versions = [job["created_at"]]
            t = job["started_at"]
            while t < job["finished_at"]:
                versions.append(t)
                t += job["step_seconds"]
            versions.append(job["finished_at"])
            self.versions[job["id"]] = sorted(set(versions))

    def version_at(self, job_id, t):
        current = None
        for v in self.versions.get(job_id, []):
            if v <= t + 1e-6:
                current = v
        return current

    def staleness(self, job_id, updated_at, t):
        """Seconds since a version newer than `updated_at` became current at `t` (0 when current)."""
        for v in self.versions.get(job_id, []):
            if v > updated_at + 1e-3:
                return max(0.0, t - v) if v <= t else 0.0
        return 0.0


class Workload:
    def __init__(self, name, port, headers, workflows, running, finished, seconds, seed):
        # One port, or several that the clients are spread over, round robin.
        self.ports = port if isinstance(port, list) else [port]
        self.name, self.port, self.headers = name, self.ports[0], headers
        self.workflows, self.running, self.finished = workflows, running, finished
        self.seconds, self.seed = seconds, seed
        self.records = []  # (kind, workflow, job or None, filters, t, status, [(id, updated_at)], cache_status)
        self.lock = threading.Lock()

    def get(self, conn, kind, workflow, job, filters):
        target = f"/v0/workflows/{workflow}/jobs" + (f"/{job}" if job else "")
        if filters:
            target += "?" + urllib.parse.urlencode(filters)
        try:
            conn.request("GET", target, headers=self.headers)
            r = conn.getresponse()
            body = r.read()
            status, cache = r.status, r.getheader("Cache-Status", "") + "; age=" + r.getheader("Age", "")
        except (OSError, http.client.HTTPException):
            status, body, cache = None, b"", ""
        t = time.time()
        seen = []
        if status == 200:
            document = json.loads(body)
            jobs = [document] if job else document.get("jobs", [])
            seen = [(j.get("id"), parse_time(j.get("updated_at"))) for j in jobs]
        with self.lock:
            self.records.append((kind, workflow, job, filters, t, status, seen, cache))
        return status

    def loop(self, period, action, phase, port):
        conn = http.client.HTTPConnection(HOST, port, timeout=10)
        next_at = self.start + phase
        while True:
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if time.monotonic() >= self.stop:
                break
            try:
                action(conn)
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection(HOST, port, timeout=10)
            next_at += period
        conn.close()

    def run(self):
        rng = random.Random(self.seed)
        today = datetime.datetime.now(datetime.timezone.utc).date()
        self.start = time.monotonic() + 0.2
        self.stop = self.start + self.seconds
        threads = []

        def add(period, phase, action):
            port = self.ports[len(threads) % len(self.ports)]
            threads.append(threading.Thread(target=self.loop, args=(period, action, phase, port)))

        for dashboard in range(2):
            for w in self.workflows:
                add(2, rng.uniform(0, 2), lambda c, w=w: self.get(c, "running list", w, None, {"status": "running"}))
                add(6, rng.uniform(0, 6), lambda c, w=w: self.get(c, "full list", w, None, {}))
        for w, job in self.running:
            add(1, rng.uniform(0, 1), lambda c, w=w, job=job: self.get(c, "watched detail", w, job, {}))

        def audit(c):
            w, job = rng.choice(self.finished)
            self.get(c, "finished detail", w, job, {})

        def report(c):
            day = (today - datetime.timedelta(days=rng.randrange(4))).isoformat()
            user = rng.choice(["user-analyst-01", "user-pipeline-bot", "user-ops-07"])
            self.get(c, "report list", rng.choice(self.workflows), None, {"created_on": day, "created_by": user})

        add(0.5, 0.1, audit)
        add(1, 0.3, report)
        for t in threads:
            t.start()
        for t in threads:
            t.join()


def floor_of(records, start):
    """One list call per BOUND-second window in which a workflow's list was read (greedy from
    each read), plus one detail call per job version that appeared after `start` and was read."""
    lists = 0
    by_workflow = {}
    for kind, workflow, job, _, t, status, _, _ in records:
        if job is None:
            by_workflow.setdefault(workflow, []).append(t)
    for times in by_workflow.values():
        covered_until = -1
        for t in sorted(times):
            if t >= covered_until:
                lists += 1
                covered_until = t + BOUND
    return lists


def classify(cache):
    """A short name for how an answer was served, from its Cache-Status."""
    cache = cache.split("; age=")[0]
    if not cache:
        return "-"
    if "list-revalidated" in cache:
        return "list-revalidated"
    source = cache.split(";")[1].strip() if ";" in cache else cache
    if source == "hit" and "ttl=-" in cache:
        return "hit while revalidating"
    return source


def analyse(workload, truth, calls_before, calls_after, start_wall):
    records = workload.records
    lists_floor = floor_of(records, start_wall)
    new_versions = set()
    for kind, workflow, job, _, t, status, _, _ in records:
        if job is not None:
            v = truth.version_at(job, t)
            if v is not None and v > start_wall:
                new_versions.add((job, v))
    stale, staleness, by_source, all_sources = 0, [], {}, {}
    answered = 0
    for kind, workflow, job, _, t, status, seen, cache in records:
        if status != 200:
            continue
        answered += 1
        all_sources[classify(cache)] = all_sources.get(classify(cache), 0) + 1
        worst = 0.0
        for job_id, updated in seen:
            if updated is not None:
                worst = max(worst, truth.staleness(job_id, updated, t))
        if worst > 0:
            stale += 1
            staleness.append(worst)
            source = cache.split(";")[1].strip() if ";" in cache else (cache or "-")
            source = classify(cache)
            key = f"{kind} / {source}"
            by_source[key] = by_source.get(key, 0) + 1
    staleness.sort()

    def pct(p):
        return staleness[min(len(staleness) - 1, int(p * len(staleness)))] if staleness else 0.0

    def delta(name):
        return calls_after.get(name, 0) - calls_before.get(name, 0)

    lists, details = delta("GET list"), delta("GET detail")
    return {
        "target": workload.name, "requests": len(records), "errors": sum(1 for r in records if r[5] != 200),
        "lists": lists, "details": details, "calls": lists + details,
        "floor": lists_floor + len(new_versions), "floor_lists": lists_floor, "floor_details": len(new_versions),
        "stale_share": stale / answered if answered else 0.0,
        "p50": pct(0.5), "p99": pct(0.99), "max": staleness[-1] if staleness else 0.0, "by_source": by_source,
        "all_sources": all_sources,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=float(os.environ.get("ECONOMY_SECONDS", "40")))
    parser.add_argument("--targets", default=os.environ.get("ECONOMY_TARGETS", "direct,nginx,proxy"))
    parser.add_argument("--out", help="append the markdown table to this file")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    targets = args.targets.split(",")
    scratch = tempfile.mkdtemp(prefix="pixxel-economy-")
    processes = []
    try:
        sim_port = free_port()
        sim_log = os.path.join(scratch, "sim.log")
        processes.append(subprocess.Popen(
            [os.path.join(BIN, "pixxel-sim"), "--host", HOST, "--port", str(sim_port), "--api-key", SIM_KEY,
             "--workflows", "4", "--jobs", "30", "--pending-seconds", "1", "--running-seconds", "900",
             "--progress-step-seconds", str(STEP), "--seed", str(args.seed)], stderr=open(sim_log, "wb")))
        sim_headers = {"Authorization": SIM_KEY}
        if not wait_until(lambda: http_get(sim_port, "/_sim/workflows", sim_headers)[0] == 200):
            raise SystemExit("economy: pixxel-sim did not start")
        workflows = json.loads(http_get(sim_port, "/_sim/workflows", sim_headers)[1])["workflows"]
        time.sleep(1.2)  # the newest jobs leave `pending`
        running, finished = [], []
        for w in workflows:
            for job in json.loads(http_get(sim_port, f"/v0/workflows/{w}/jobs", sim_headers)[1])["jobs"]:
                (running if job["status"] == "running" else finished).append((w, job["id"]))
        finished = [pair for pair in finished if pair not in running]

        token = subprocess.run([os.path.join(BIN, "pixxel-proxy"), "token", "add", "economy", "--scopes", "read",
                                "--clients-file", os.path.join(scratch, "clients")], capture_output=True, text=True, check=True).stdout.strip()
        client_headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        ports = {"direct": sim_port}
        headers = {"direct": sim_headers}
        if "proxy" in targets:
            ports["proxy"] = free_port()
            env = dict(os.environ, PIXXEL_PROXY_LISTEN_HOST=HOST, PIXXEL_PROXY_LISTEN_PORT=str(ports["proxy"]),
                       PIXXEL_PROXY_UPSTREAM_URL=f"http://{HOST}:{sim_port}", PIXXEL_API_KEY=SIM_KEY,
                       PIXXEL_PROXY_AUTH_CLIENTS_FILE=os.path.join(scratch, "clients"),
                       PIXXEL_PROXY_CACHE_DIRECTORY=os.path.join(scratch, "proxy-cache"),
                       PIXXEL_PROXY_UPSTREAM_REQUESTS_PER_SECOND="20",
                       PIXXEL_PROXY_CACHE_TTL_ACTIVE_JOB_SECONDS=str(BOUND), PIXXEL_PROXY_CACHE_TTL_JOB_LIST_SECONDS=str(BOUND),
                       PIXXEL_PROXY_LOG_LEVEL="warning")
            processes.append(subprocess.Popen([os.path.join(BIN, "pixxel-proxy"), "serve"], env=env,
                                              stderr=open(os.path.join(scratch, "proxy.log"), "wb")))
            headers["proxy"] = client_headers
            if not wait_until(lambda: http_get(ports["proxy"], "/readyz", {})[0] == 200):
                raise SystemExit("economy: pixxel-proxy did not start")
        if "pair" in targets:
            redis_port = free_port()
            processes.append(subprocess.Popen(
                ["redis-server", "--port", str(redis_port), "--bind", HOST, "--save", "", "--appendonly", "no", "--logfile", ""],
                stdout=subprocess.DEVNULL))
            admin = subprocess.run([os.path.join(BIN, "pixxel-proxy"), "token", "add", "economy-admin", "--scopes", "admin",
                                    "--clients-file", os.path.join(scratch, "clients")], capture_output=True, text=True, check=True).stdout.strip()
            pair = []
            for index in range(2):
                port = free_port()
                env = dict(os.environ, PIXXEL_PROXY_LISTEN_HOST=HOST, PIXXEL_PROXY_LISTEN_PORT=str(port),
                           PIXXEL_PROXY_UPSTREAM_URL=f"http://{HOST}:{sim_port}", PIXXEL_API_KEY=SIM_KEY,
                           PIXXEL_PROXY_AUTH_CLIENTS_FILE=os.path.join(scratch, "clients"),
                           PIXXEL_PROXY_CACHE_DIRECTORY=os.path.join(scratch, f"pair-cache-{index}"),
                           PIXXEL_PROXY_UPSTREAM_REQUESTS_PER_SECOND="20",
                           PIXXEL_PROXY_CACHE_TTL_ACTIVE_JOB_SECONDS=str(BOUND), PIXXEL_PROXY_CACHE_TTL_JOB_LIST_SECONDS=str(BOUND),
                           PIXXEL_PROXY_SHARED_REDIS_URL=f"redis://{HOST}:{redis_port}", PIXXEL_PROXY_LOG_LEVEL="warning")
                processes.append(subprocess.Popen([os.path.join(BIN, "pixxel-proxy"), "serve"], env=env,
                                                  stderr=open(os.path.join(scratch, f"pair-{index}.log"), "wb")))
                pair.append(port)

            def joined(port):
                status, body = http_get(port, "/admin/stats", {"Authorization": f"Bearer {admin}"})
                return status == 200 and json.loads(body)["shared"]["state"] == "up"
            if not all(wait_until(lambda port=port: joined(port)) for port in pair):
                raise SystemExit("economy: the two instances did not join Redis")
            ports["pair"] = pair
            headers["pair"] = client_headers
        if "nginx" in targets:
            if not os.path.exists("/usr/sbin/nginx"):
                raise SystemExit("economy: /usr/sbin/nginx is missing (apt-get install nginx-light)")
            ports["nginx"] = free_port()
            directory = os.path.join(scratch, "nginx")
            os.makedirs(os.path.join(directory, "temp"))
            with open(os.path.join(directory, "nginx.conf"), "w") as f:
                f.write(NGINX_CONF.format(dir=directory, host=HOST, port=ports["nginx"], token=token, sim_port=sim_port,
                                          key=SIM_KEY, bound=BOUND, user="user root;\n" if os.geteuid() == 0 else ""))
            processes.append(subprocess.Popen(["/usr/sbin/nginx", "-p", directory, "-c", os.path.join(directory, "nginx.conf"),
                                               "-e", os.path.join(directory, "error.log")]))
            headers["nginx"] = client_headers
            if not wait_until(lambda: http_get(ports["nginx"], "/v0/", {})[0] == 401):
                raise SystemExit("economy: nginx did not start")

        results = []
        for name in targets:
            # Warm: one pass over everything the workload reads.
            warm = Workload(name, ports[name], headers[name], workflows, running, finished, 0, args.seed)
            conn = http.client.HTTPConnection(HOST, warm.port, timeout=10)
            for w in workflows:
                warm.get(conn, "warm", w, None, {})
                warm.get(conn, "warm", w, None, {"status": "running"})
            for w, job in running + finished:
                warm.get(conn, "warm", w, job, {})
            conn.close()
            before = json.loads(http_get(sim_port, "/_sim/stats", sim_headers)[1])["requests"]
            start_wall = time.time()
            workload = Workload(name, ports[name], headers[name], workflows, running, finished, args.seconds, args.seed)
            workload.run()
            after = json.loads(http_get(sim_port, "/_sim/stats", sim_headers)[1])["requests"]
            truth = Truth(json.loads(http_get(sim_port, "/_sim/truth", sim_headers)[1])["jobs"])
            result = analyse(workload, truth, before, after, start_wall)
            if os.environ.get("ECONOMY_DUMP"):  # every answer, for reading one job's timeline
                with open(f"{os.environ['ECONOMY_DUMP']}-{name}.jsonl", "w") as dump:
                    for kind, workflow, job, filters, t, status, seen, cache in workload.records:
                        truths = {j: truth.version_at(j, t) for j, _ in seen}
                        dump.write(json.dumps({"kind": kind, "job": job, "t": t, "status": status, "cache": cache,
                                               "seen": seen, "truth": truths}) + "\n")
            results.append(result)
            print(f"economy: {name}: {result['requests']} requests, {result['calls']} upstream calls "
                  f"({result['lists']} lists, {result['details']} details), floor {result['floor']}, "
                  f"stale {result['stale_share'] * 100:.1f}%, {result['errors']} errors", file=sys.stderr)
            if result["errors"] > result["requests"] // 100:
                raise SystemExit(f"economy: {name} answered {result['errors']} of {result['requests']} requests with an error; see {scratch}")

        table = render(results, args.seconds, len(running))
        one = next((r for r in results if r["target"] == "proxy"), None)
        two = next((r for r in results if r["target"] == "pair"), None)
        if one and two:
            table += (f"\nTwo instances sharing one Redis, clients split round robin: {two['calls']} upstream calls against one "
                      f"instance's {one['calls']}: **{two['calls'] / max(one['calls'], 1):.2f}x** (the shared tier's bound: 1.1x).\n")
        print(table)
        if args.out:
            with open(args.out, "a") as f:
                f.write(table)
    finally:
        stop_all(processes)
        if not os.environ.get("ECONOMY_KEEP"):
            shutil.rmtree(scratch, ignore_errors=True)


def render(results, seconds, running):
    lines = [
        "",
        f"### Economy: upstream calls and staleness ({seconds:.0f} s, 4 workflows x 30 jobs, {running} running jobs changing every {STEP} s, "
        f"freshness bound {BOUND} s, warm caches)",
        "",
        "| target | client requests | upstream calls | lists | details | floor | calls / floor | stale answers | staleness p50 | p99 | max |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(f"| {r['target']} | {r['requests']} | {r['calls']} | {r['lists']} | {r['details']} | {r['floor']} "
                     f"({r['floor_lists']} + {r['floor_details']}) | {r['calls'] / max(r['floor'], 1):.2f} | "
                     f"{r['stale_share'] * 100:.1f}% | {r['p50']:.1f} s | {r['p99']:.1f} s | {r['max']:.1f} s |")
    for title, field in [("All answers by cache outcome", "all_sources"),
                         ("Stale answers by request kind and cache outcome", "by_source")]:
        lines += ["", f"{title}:", ""]
        for r in results:
            counts = ", ".join(f"{k}: {v}" for k, v in sorted(r[field].items(), key=lambda kv: -kv[1]))
            lines.append(f"- {r['target']}: {counts or 'none'}")
    lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
