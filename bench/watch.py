#!/usr/bin/env python3
"""The watch benchmark: a tool waiting for running jobs to finish, three ways, loopback only.

A tool creates N jobs (default 50) through pixxel-proxy and waits until every one of them has
finished, three ways, each against a fresh pixxel-sim (same seed) and a fresh pixxel-proxy:

- poll: every second, GET each unfinished job's detail (keep-alive, a few threads);
- long-poll: per job, GET with `If-None-Match: <last ETag>` and `Prefer: wait=30` in a loop
  (200: changed, 304: not changed), one thread per job;
- SSE: one `GET /v0/workflows/{w}/jobs?watch=1` with `Accept: text/event-stream`, read as it
  comes (`event: job` / `id:` / `data: <the job's list entry>`, `:` heartbeats, `event: reset`),
  resumed with `Last-Event-ID` if it breaks. A proxy that answers anything but
  `text/event-stream` there has no watch: the row says "not available".

For each: client requests, body bytes sent to the client (headers excluded, no gzip asked),
upstream calls (the simulator's /_sim/stats, from after the jobs were created to the end), and
how late each change was seen: every version a job took after its creation (its start, a new
`updated_at` every progress step, its finish) follows from its schedule in /_sim/truth; a
version's lateness is when the tool first saw it minus when the simulator made it. Versions the
tool never saw are counted as missed. WATCH_DUMP=PREFIX writes every sighting beside the job's
versions; WATCH_KEEP=1 keeps the scratch directory (logs), as does a failed run.

Usage: bench/watch.py [--jobs N] [--running-seconds S] [--ways poll,long-poll,sse] [--bin DIR]
[--out FILE]. Needs pixxel-proxy and pixxel-sim in --bin (default .build/release).
"""
import argparse
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from economy import HOST, free_port, http_get, parse_time, stop_all, wait_until  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIM_KEY = "watch-sim-key"
TERMINAL = ("completed", "failed")
WAYS = {"poll": "poll every 1 s", "long-poll": "long-poll (Prefer: wait=30)", "sse": "SSE watch of the list"}


class Recorder:
    """What one way's tool saw: each (job, updated_at, status) with the time it arrived."""

    def __init__(self, tracked):
        self.tracked = set(tracked)
        self.lock = threading.Lock()
        self.sightings = []  # (job id, updated_at as epoch seconds, status, wall time seen)
        self.finished = set()
        self.requests = 0
        self.bytes = 0
        self.errors = 0
        self.answers = {}  # "200", "304", ... -> count
        self.notes = {}  # other things worth telling -> count
        self.all_finished = threading.Event()

    def count(self, status, body_bytes):
        with self.lock:
            self.requests += 1
            self.bytes += body_bytes
            self.answers[str(status)] = self.answers.get(str(status), 0) + 1

    def note(self, what, n=1):
        with self.lock:
            self.notes[what] = self.notes.get(what, 0) + n

    def error(self, what):
        with self.lock:
            self.errors += 1
            self.notes[what] = self.notes.get(what, 0) + 1

    def saw(self, job):
        """Records a job document (a detail or a list entry) seen now; True when it is finished."""
        t = time.time()
        job_id, status = job.get("id"), job.get("status")
        if job_id not in self.tracked:
            return False
        with self.lock:
            self.sightings.append((job_id, parse_time(job.get("updated_at")), status, t))
            if status in TERMINAL:
                self.finished.add(job_id)
                if len(self.finished) == len(self.tracked):
                    self.all_finished.set()
        return status in TERMINAL


def headers_for(token, extra=None):
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    headers.update(extra or {})
    return headers


def poll(port, token, workflow, jobs, deadline, rec, threads=5):
    """Every second, GET each unfinished job's detail; a job seen finished is not asked again."""
    start = time.monotonic()

    def worker(mine):
        conn = http.client.HTTPConnection(HOST, port, timeout=10)
        left = list(mine)
        next_at = start
        while left and time.monotonic() < deadline:
            for job in list(left):
                try:
                    conn.request("GET", f"/v0/workflows/{workflow}/jobs/{job}", headers=headers_for(token))
                    r = conn.getresponse()
                    body = r.read()
                except (OSError, http.client.HTTPException) as e:
                    rec.count("error", 0)
                    rec.error(f"poll: {type(e).__name__}")
                    conn.close()
                    conn = http.client.HTTPConnection(HOST, port, timeout=10)
                    continue
                rec.count(r.status, len(body))
                if r.status != 200:
                    rec.error(f"poll: answer {r.status}")
                    continue
                if rec.saw(json.loads(body)):
                    left.remove(job)
            next_at += 1.0
            delay = min(next_at, deadline) - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        conn.close()

    pool = [threading.Thread(target=worker, args=(jobs[i::threads],), daemon=True) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()


def long_poll(port, token, workflow, jobs, deadline, rec, wait=30):
    """Per job: GET, then GET with If-None-Match and Prefer: wait until the job is seen finished."""

    def worker(job):
        conn = None
        etag = None
        while time.monotonic() < deadline:
            remaining = deadline - time.monotonic()
            extra = {}
            if etag:
                extra = {"If-None-Match": etag, "Prefer": f"wait={max(1, min(wait, int(remaining)))}"}
            asked = time.monotonic()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(HOST, port, timeout=wait + 15)
                conn.request("GET", f"/v0/workflows/{workflow}/jobs/{job}", headers=headers_for(token, extra))
                r = conn.getresponse()
                body = r.read()
            except (OSError, http.client.HTTPException) as e:
                rec.count("error", 0)
                rec.error(f"long-poll: {type(e).__name__}")
                if conn:
                    conn.close()
                conn = None
                time.sleep(1)
                continue
            rec.count(r.status, len(body))
            if etag and r.getheader("Preference-Applied", "").lower().startswith("wait"):
                rec.note("answers with Preference-Applied: wait")
            elif etag:
                rec.note("answers without Preference-Applied")
            if r.status == 200:
                etag = r.getheader("ETag") or etag
                if not r.getheader("ETag"):
                    rec.note("200 without ETag")
                if rec.saw(json.loads(body)):
                    break
            elif r.status == 304:
                etag = r.getheader("ETag") or etag
            else:
                rec.error(f"long-poll: answer {r.status}")
            if r.status != 200 and time.monotonic() - asked < 0.5:
                # Not held (no wait applied, or an error): do not spin, act as a 1 s poller.
                rec.note("answers not held (under 0.5 s)")
                time.sleep(1)
        if conn:
            conn.close()

    pool = [threading.Thread(target=worker, args=(job,), daemon=True) for job in jobs]
    for t in pool:
        t.start()
    for t in pool:
        t.join()


def sse(port, token, workflow, jobs, deadline, rec):
    """One watch of the workflow's list, resumed with Last-Event-ID if it breaks.

    Returns None when it watched, or a reason when the proxy has no watch there."""
    last_id = None
    first = True
    while not rec.all_finished.is_set() and time.monotonic() < deadline:
        extra = {"Accept": "text/event-stream"}  # no Cache-Control: no-cache, which would force an upstream call
        if last_id is not None:
            extra["Last-Event-ID"] = last_id
        conn = http.client.HTTPConnection(HOST, port, timeout=20)
        try:
            conn.request("GET", f"/v0/workflows/{workflow}/jobs?watch=1", headers=headers_for(token, extra))
            # The stream ends with the connection (`Connection: close`), so http.client hands the
            # socket to the response: keep it to set the read timeout.
            sock = conn.sock
            r = conn.getresponse()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            rec.count("error", 0)
            rec.error(f"sse: {type(e).__name__}")
            if first:
                return f"no answer ({type(e).__name__})"
            time.sleep(1)
            continue
        content_type = r.getheader("Content-Type", "")
        if r.status != 200 or not content_type.lower().startswith("text/event-stream"):
            try:
                body = r.read()
            except (OSError, http.client.HTTPException):
                body = b""
            conn.close()
            rec.count(r.status, len(body))
            if first:
                return f"answered {r.status} `{content_type.split(';')[0] or 'no Content-Type'}`"
            rec.error(f"sse: resume answered {r.status} {content_type}")
            time.sleep(1)
            continue
        if not first:
            rec.note("reconnections (Last-Event-ID)")
        first = False
        received = 0
        event, data, event_id = None, [], None
        try:
            while not rec.all_finished.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                sock.settimeout(min(20.0, remaining))  # a heartbeat comes at least every 15 s
                raw = r.readline()
                if not raw:
                    rec.note("streams ended by the proxy")
                    break
                received += len(raw)
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if line == "":
                    # The end of an event: dispatch it.
                    if event_id is not None:
                        last_id = event_id
                    if data or event:
                        kind = event or "message"
                        rec.note(f"`event: {kind}`")
                        if kind in ("job", "message"):
                            try:
                                document = json.loads("\n".join(data))
                            except ValueError:
                                rec.error("sse: data that is not JSON")
                                document = None
                            if isinstance(document, dict):
                                # The job's list entry; tolerate it wrapped as {"job": ...} or {"jobs": [...]}.
                                entries = document.get("jobs") if isinstance(document.get("jobs"), list) else [document.get("job", document)]
                                for entry in entries:
                                    if isinstance(entry, dict):
                                        rec.saw(entry)
                    event, data, event_id = None, [], None
                    continue
                if line.startswith(":"):
                    rec.note("`:` comments (heartbeats)")
                    continue
                field, _, value = line.partition(":")
                if value.startswith(" "):
                    value = value[1:]
                if field == "event":
                    event = value
                elif field == "data":
                    data.append(value)
                elif field == "id":
                    event_id = value
                elif field == "retry":
                    pass
                else:
                    rec.note(f"unknown field `{field}`")
        except (OSError, http.client.HTTPException) as e:
            if time.monotonic() < deadline:
                rec.error(f"sse: stream broke ({type(e).__name__})")
        rec.count(200, received)
        conn.close()
        if not rec.all_finished.is_set() and time.monotonic() < deadline:
            time.sleep(0.5)
    return None


class Stack:
    """A fresh pixxel-sim and a fresh pixxel-proxy in front of it, in a directory of their own."""

    def __init__(self, args, scratch, name):
        self.dir = os.path.join(scratch, name)
        os.makedirs(self.dir)
        self.processes = []
        try:
            self.start(args)
        except BaseException:
            self.stop()
            raise

    def start(self, args):
        self.sim_port = free_port()
        self.sim_headers = {"Authorization": SIM_KEY}
        self.processes.append(subprocess.Popen(
            [os.path.join(args.bin, "pixxel-sim"), "--host", HOST, "--port", str(self.sim_port), "--api-key", SIM_KEY,
             "--workflows", "1", "--jobs", "10", "--pending-seconds", str(args.pending_seconds),
             "--running-seconds", str(args.running_seconds), "--progress-step-seconds", str(args.step_seconds),
             "--seed", str(args.seed)], stderr=open(os.path.join(self.dir, "sim.log"), "wb")))
        if not wait_until(lambda: http_get(self.sim_port, "/_sim/workflows", self.sim_headers)[0] == 200):
            raise SystemExit(f"watch: pixxel-sim did not start (see {self.dir}/sim.log)")
        self.workflow = json.loads(http_get(self.sim_port, "/_sim/workflows", self.sim_headers)[1])["workflows"][0]
        clients = os.path.join(self.dir, "clients")
        self.token = subprocess.run([os.path.join(args.bin, "pixxel-proxy"), "token", "add", "watch", "--scopes", "read,write",
                                     "--clients-file", clients], capture_output=True, text=True, check=True).stdout.strip()
        self.port = free_port()
        env = dict(os.environ, PIXXEL_PROXY_LISTEN_HOST=HOST, PIXXEL_PROXY_LISTEN_PORT=str(self.port),
                   PIXXEL_PROXY_UPSTREAM_URL=f"http://{HOST}:{self.sim_port}", PIXXEL_API_KEY=SIM_KEY,
                   PIXXEL_PROXY_AUTH_CLIENTS_FILE=clients, PIXXEL_PROXY_CACHE_DIRECTORY=os.path.join(self.dir, "cache"),
                   PIXXEL_PROXY_UPSTREAM_REQUESTS_PER_SECOND=str(args.rps),
                   PIXXEL_PROXY_CACHE_TTL_ACTIVE_JOB_SECONDS=str(args.bound),
                   PIXXEL_PROXY_CACHE_TTL_JOB_LIST_SECONDS=str(args.bound),
                   PIXXEL_PROXY_WATCH_MAX_WAIT_SECONDS="60", PIXXEL_PROXY_LOG_LEVEL="warning")
        self.processes.append(subprocess.Popen([os.path.join(args.bin, "pixxel-proxy"), "serve"], env=env,
                                               stderr=open(os.path.join(self.dir, "proxy.log"), "wb")))
        if not wait_until(lambda: http_get(self.port, "/readyz", {})[0] == 200):
            raise SystemExit(f"watch: pixxel-proxy did not start (see {self.dir}/proxy.log)")

    def create_jobs(self, n):
        """POSTs n jobs through the proxy, one keep-alive connection; returns their ids."""
        conn = http.client.HTTPConnection(HOST, self.port, timeout=30)
        ids = []
        for _ in range(n):
            conn.request("POST", f"/v0/workflows/{self.workflow}/jobs?project_id=proj-watch", body=b"{}",
                         headers=headers_for(self.token, {"Content-Type": "application/json"}))
            r = conn.getresponse()
            body = r.read()
            if r.status != 200:
                raise SystemExit(f"watch: creating a job answered {r.status}: {body[:200]!r}")
            ids.append(json.loads(body)["id"])
        conn.close()
        return ids

    def upstream_calls(self):
        return json.loads(http_get(self.sim_port, "/_sim/stats", self.sim_headers)[1])["requests"]

    def truth(self):
        """The jobs' schedules and the simulator's clock against ours (sim time - wall time)."""
        before = time.time()
        body = http_get(self.sim_port, "/_sim/truth", self.sim_headers)[1]
        after = time.time()
        document = json.loads(body)
        return {job["id"]: job for job in document["jobs"]}, document["now"] - (before + after) / 2

    def stop(self):
        stop_all(self.processes)


def versions_of(job):
    """Every updated_at a job has over its life (sim time): created, started, each step, finished."""
    versions = [job["created_at"]]
    t = job["started_at"]
    while t < job["finished_at"] - 1e-6:
        versions.append(t)
        t += job["step_seconds"]
    versions.append(job["finished_at"])
    return sorted(set(versions))


def analyse(rec, truth, offset, tracked, end):
    """Lateness of each version a job took after its creation, first sight against truth."""
    first_seen, unmatched = {}, 0
    schedules = {job: versions_of(truth[job]) for job in tracked}
    for job, updated, _, t in rec.sightings:
        match = next((v for v in schedules[job] if updated is not None and abs(v - updated) < 0.01), None)
        if match is None:
            unmatched += 1
            continue
        key = (job, match)
        first_seen[key] = min(first_seen.get(key, t), t)
    # Every version after the one the tool's POST answered with (the job started, each progress
    # step, the finish), up to the end of the wait. The start comes before the wait begins: a tool
    # shown `pending` then is shown a version already out of date.
    existed = [(job, v) for job in tracked for v in schedules[job][1:] if v - offset <= end]
    lateness = sorted(max(0.0, first_seen[k] - (k[1] - offset)) for k in existed if k in first_seen)
    return {"existed": len(existed), "seen": len(lateness), "lateness": lateness, "unmatched": unmatched}


def pct(values, p):
    return values[min(len(values) - 1, int(p * len(values)))] if values else 0.0


def run_way(way, args, scratch):
    stack = Stack(args, scratch, way)
    try:
        jobs = stack.create_jobs(args.jobs)
        time.sleep(args.pending_seconds + 0.5)  # every job has left `pending`: N jobs running
        calls_before = stack.upstream_calls()
        rec = Recorder(jobs)
        start = time.time()
        deadline = time.monotonic() + args.running_seconds + 2 * args.bound + 10
        unavailable = None
        if way == "poll":
            poll(stack.port, stack.token, stack.workflow, jobs, deadline, rec)
        elif way == "long-poll":
            long_poll(stack.port, stack.token, stack.workflow, jobs, deadline, rec)
        else:
            unavailable = sse(stack.port, stack.token, stack.workflow, jobs, deadline, rec)
        end = time.time()
        calls_after = stack.upstream_calls()
        truth, offset = stack.truth()
    finally:
        stack.stop()
    delta = {k: calls_after.get(k, 0) - calls_before.get(k, 0) for k in set(calls_after) | set(calls_before)}
    result = {"way": way, "unavailable": unavailable, "requests": rec.requests, "bytes": rec.bytes, "errors": rec.errors,
              "answers": rec.answers, "notes": rec.notes, "finished": len(rec.finished), "jobs": len(jobs),
              "seconds": end - start, "calls": sum(delta.values()), "lists": delta.get("GET list", 0),
              "details": delta.get("GET detail", 0)}
    result.update(analyse(rec, truth, offset, jobs, end))
    if os.environ.get("WATCH_DUMP"):  # every sighting beside the job's versions, in wall time
        with open(f"{os.environ['WATCH_DUMP']}-{way}.jsonl", "w") as dump:
            for job, updated, status, t in rec.sightings:
                dump.write(json.dumps({"job": job, "t": t - start, "updated_at": updated and updated - offset - start,
                                       "status": status, "versions": [v - offset - start for v in versions_of(truth[job])]}) + "\n")
    return result


def render(results, args):
    changes = len(versions_of({"created_at": -1, "started_at": 0, "finished_at": args.running_seconds,
                               "step_seconds": args.step_seconds})) - 1  # after its creation: start, steps, finish
    lines = [
        "",
        "## Watching 50 running jobs: polling, long-poll, SSE" if args.jobs == 50 else
        f"## Watching {args.jobs} running jobs: polling, long-poll, SSE",
        "",
        "| way | client requests | bytes to client | upstream calls | changes seen / existed | lateness p50 / p99 / max |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        if r["unavailable"]:
            lines.append(f"| {WAYS[r['way']]} | not available: {r['unavailable']} | | | | |")
            continue
        late = r["lateness"]
        lines.append(f"| {WAYS[r['way']]} | {r['requests']} | {r['bytes']:,} | {r['calls']} ({r['lists']} lists, {r['details']} details) "
                     f"| {r['seen']} / {r['existed']} | {pct(late, 0.5):.1f} / {pct(late, 0.99):.1f} / {(late[-1] if late else 0):.1f} s |")
    watch = next((r for r in results if r["way"] == "sse" and not r["unavailable"]), None)
    polled = next((r for r in results if r["way"] == "poll"), None)
    if watch:
        late = watch["lateness"]
        within = watch["seen"] == watch["existed"] and (not late or late[-1] <= args.bound)
        lines += ["", f"The watch against its promise: every change seen within the {args.bound} s bound: "
                      f"**{'yes' if within else 'no'}** ({watch['seen']} of {watch['existed']}, latest {(late[-1] if late else 0):.1f} s); "
                      f"client requests: **{watch['requests']}**; upstream calls: **{watch['calls']}**"
                      + (f" against polling's {polled['calls']}" if polled else "") + "."]
    lines += [
        "",
        f"Settings: {args.jobs} jobs created through the proxy (POST) in one workflow of a fresh pixxel-sim per way "
        f"(seed {args.seed}; pending {args.pending_seconds:g} s, running {args.running_seconds:g} s, a new `updated_at` every "
        f"{args.step_seconds:g} s: {changes} changes per job after its creation: its start, each step, its finish), a fresh pixxel-proxy per way with freshness bound "
        f"{args.bound} s (`cache.ttl.active_job_seconds`, `cache.ttl.job_list_seconds`), upstream budget {args.rps}/s, "
        f"`watch.max_wait_seconds` 60; the tool starts once all are running and stops when it has seen each finished. "
        f"Bytes: bodies only (headers excluded), no gzip asked. Upstream calls: the simulator's count from the start of "
        f"the wait to its end. Lateness: when the tool first saw a version minus when the simulator made it (/_sim/truth); "
        f"the start happens before the wait begins, so a tool shown the job still `pending` at first sees the start late.",
        "",
    ]
    for r in results:
        if r["unavailable"]:
            continue
        answers = ", ".join(f"{k}: {v}" for k, v in sorted(r["answers"].items()))
        notes = ", ".join(f"{k}: {v}" for k, v in sorted(r["notes"].items()))
        lines.append(f"- {WAYS[r['way']]}: {r['seconds']:.0f} s, {r['finished']} of {r['jobs']} seen finished; answers {answers}"
                     + (f"; {notes}" if notes else "") + (f"; {r['unmatched']} sightings matching no version" if r["unmatched"] else ""))
    lines.append("")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=int(os.environ.get("WATCH_JOBS", "50")))
    parser.add_argument("--running-seconds", type=float, default=float(os.environ.get("WATCH_RUNNING_SECONDS", "30")))
    parser.add_argument("--pending-seconds", type=float, default=2)
    parser.add_argument("--step-seconds", type=float, default=5, help="the simulator's progress step")
    parser.add_argument("--bound", type=int, default=5, help="freshness of lists and running jobs, seconds")
    parser.add_argument("--rps", type=int, default=20, help="the proxy's upstream budget, calls per second")
    parser.add_argument("--ways", default="poll,long-poll,sse")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--bin", default=os.path.join(ROOT, ".build", "release"), help="where pixxel-proxy and pixxel-sim are")
    parser.add_argument("--out", help="append the markdown section to this file")
    args = parser.parse_args()
    ways = [w for w in args.ways.split(",") if w]
    for way in ways:
        if way not in WAYS:
            raise SystemExit(f"watch: unknown way {way!r} (poll, long-poll, sse)")
    scratch = tempfile.mkdtemp(prefix="pixxel-watch-")
    results = []
    keep = bool(os.environ.get("WATCH_KEEP"))
    try:
        for way in ways:
            r = run_way(way, args, scratch)
            results.append(r)
            if r["unavailable"]:
                print(f"watch: {way}: not available ({r['unavailable']})", file=sys.stderr)
                continue
            print(f"watch: {way}: {r['requests']} requests, {r['bytes']} bytes, {r['calls']} upstream calls, "
                  f"{r['seen']}/{r['existed']} changes seen, {r['finished']}/{r['jobs']} finished, {r['errors']} errors "
                  f"in {r['seconds']:.0f} s", file=sys.stderr)
            if r["errors"] > max(1, r["requests"] // 100):
                keep = True
                raise SystemExit(f"watch: {way}: {r['errors']} of {r['requests']} requests failed: {r['notes']}; see {scratch}")
        section = render(results, args)
        print(section)
        if args.out:
            with open(args.out, "a") as f:
                f.write(section)
    except BaseException:
        keep = True
        raise
    finally:
        if keep:
            print(f"watch: kept {scratch}", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
