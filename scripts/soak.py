#!/usr/bin/env python3
"""`make soak`: pixxel-proxy under a randomized fault soak, loopback only, bounded in time.

pixxel-sim with its fault knobs changing over time (latency, 500s, 429 with Retry-After, hangs,
garbage bodies); ~20 concurrent clients of every kind (list pollers with and without filters,
detail watchers, writers, pass-through readers, careless and hostile clients); SIGHUP, kill -9
and SIGTERM restarts of the proxy. Every answer is checked against the invariants below; the
run prints a table of invariants and violations and exits non-zero on any violation.

Knobs: SOAK_SECONDS (default 300), SOAK_CLIENTS (default 20), SOAK_SEED (default: time),
SOAK_RATE / SOAK_BURST (the proxy's budget, default 20 / 20), SOAK_KEEP=1 keeps the scratch dir,
SOAK_RESTARTS=0 (only a SIGHUP: one process for the whole run, to watch its memory),
SOAK_WRITERS=0 (no job creation: the data stays the same size, so memory growth is the process's),
SOAK_PROXY_WRAPPER (a command the proxy runs under, e.g. "heaptrack -o FILE").

SOAK_INSTANCES=2: two instances sharing one redis-server of the soak's own; every client picks
an instance per request; Redis is SIGSTOPped for 10 s, killed, and brought back empty; the
instances take turns at the restarts. The cross-instance invariants (a job never older than
another request's answer showed WINDOW before; no job created and acknowledged missing from a
full list started WINDOW after) are counted with Redis settled (up, no Redis event in the 5 s
before); what happens during Redis trouble is reported apart and does not fail the run.

SOAK_DISK_FAULTS=1 (root): the cache directory lives on a small loop-mounted ext4 filesystem,
which is filled to the last block, emptied, then made immutable (`chattr +i`, with a SIGTERM
restart while it is) and writable again. Invariant: every job creation answered 200 is in the audit store or,
when the store refused it, in the journal with its job id.
"""
import datetime
import http.client
import json
import os
import random
import shutil
import signal
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
SIM_KEY = "soak-sim-key"
UPSTREAM_TIMEOUT = 3.0
# An answer may take the upstream timeout (one deadline covers the budget wait, the call and
# its one retry) plus this much for the loop, the disk and the machine being busy.
ANSWER_SLACK = 2.0

# The cross-instance window the README promises: another instance's answer, or an acknowledged
# job creation, is reflected everywhere this long after.
WINDOW = 0.05
# With Redis back, this long before the cross-instance invariants count again.
REDIS_SETTLE = 5.0

INVARIANTS = [
    ("right_resource", "a detail is the job asked for; a list holds only that workflow's jobs, matching the filters"),
    ("no_going_back", "no client sees a job's updated_at go back in time (across restarts too)"),
    ("read_your_writes", "after a POST, the creator's GET of the job and the next full list show it"),
    ("error_shape", 'every error the proxy answers is {"error": {"code", "message"}}; a 429 has Retry-After'),
    ("answer_time", f"no answer later than upstream.timeout_seconds ({UPSTREAM_TIMEOUT:g} s) + {ANSWER_SLACK:g} s"),
    ("refused_early", "hostile and careless requests get their 4xx, never reach a 2xx or a 5xx"),
    ("no_unexpected_disconnect", "no connection error outside a restart window"),
    ("calls_per_second", "at the simulator, calls in any one-second window of one process <= rate + burst"),
    ("rss_flat", "the last process's RSS grows by at most 4 MB after warm-up, beyond what its memory tier grew"),
    ("no_unaudited_creation", "every job creation answered 200 is in the audit or, when the store refused it, in the journal"),
    ("never_older_global", f"a request started {WINDOW * 1000:.0f} ms after any answer showed a job never shows it older (Redis settled)"),
    ("no_lost_job", f"a full list started {WINDOW * 1000:.0f} ms after a job creation was acknowledged holds the job (Redis settled)"),
]
# Counted apart: the same checks while Redis was in trouble (stopped, killed, just back).
TROUBLE = ["no_going_back", "never_older_global", "no_lost_job"]


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def parse_time(text):
    if not text:
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class Ledger:
    """Counts checks and violations per invariant (thread-safe); keeps the first examples."""

    def __init__(self):
        self.lock = threading.Lock()
        self.checks = {name: 0 for name, _ in INVARIANTS}
        self.violations = {name: [] for name, _ in INVARIANTS}
        self.statuses = {}
        self.requests = 0
        self.trouble_checks, self.trouble_violations = {}, {}

    def check(self, name, ok, detail=""):
        with self.lock:
            self.checks[name] += 1
            if not ok:
                self.violations[name].append(detail)
        return ok

    def check_trouble(self, name, ok, detail=""):
        """The same check while Redis was in trouble: reported apart, never fails the run."""
        with self.lock:
            self.trouble_checks[name] = self.trouble_checks.get(name, 0) + 1
            if not ok:
                self.trouble_violations.setdefault(name, []).append(detail)
        return ok

    def count(self, status):
        with self.lock:
            self.requests += 1
            self.statuses[status] = self.statuses.get(status, 0) + 1


class Proxy:
    """The proxy process: started, signalled, restarted; restart windows recorded."""

    def __init__(self, scratch, env, name="proxy"):
        self.scratch, self.env, self.name = scratch, env, name
        self.process = None
        self.lock = threading.Lock()
        self.windows = []  # (start, end) monotonic: connection errors are expected inside
        self.lifetimes = []  # (pid, start) monotonic
        self.rss = {}  # pid -> [(t, kB)]
        self.log = open(os.path.join(scratch, f"{name}.log"), "ab")

    def start(self):
        wrapper = os.environ.get("SOAK_PROXY_WRAPPER", "").split()
        self.process = subprocess.Popen(wrapper + [os.path.join(BIN, "pixxel-proxy"), "serve"], env=self.env,
                                        stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                c = http.client.HTTPConnection(HOST, int(self.env["PIXXEL_PROXY_LISTEN_PORT"]), timeout=1)
                # Serving, not necessarily ready: a store that cannot be opened degrades the start.
                c.request("GET", "/healthz")
                if c.getresponse().status == 200:
                    c.close()
                    self.lifetimes.append((self.process.pid, time.monotonic()))
                    return
            except OSError:
                pass
            if self.process.poll() is not None:
                raise SystemExit(f"soak: the proxy exited with {self.process.returncode}; see {self.scratch}/{self.name}.log")
            time.sleep(0.05)
        raise SystemExit("soak: the proxy never became ready")

    def restart(self, how):
        started = time.monotonic()
        with self.lock:
            self.windows.append([started, float("inf")])
        if how == "SIGHUP":
            self.process.send_signal(signal.SIGHUP)
            time.sleep(0.2)
        else:
            self.process.send_signal(signal.SIGKILL if how == "kill -9" else signal.SIGTERM)
            code = self.process.wait(timeout=60)
            if how == "SIGTERM" and code != 0:
                LEDGER.check("no_unexpected_disconnect", False, f"SIGTERM exit code {code}")
            self.start()
        with self.lock:
            self.windows[-1][1] = time.monotonic() + 1.0

    def in_window(self, t0, t1):
        with self.lock:
            return any(start - 0.5 <= t1 and t0 <= end for start, end in self.windows)

    def sample_rss(self, admin_token):
        """RSS in kB, with the memory tier's bytes at the same moment (what the cache holds is
        data, bounded by cache.memory_mb; growth beyond it is the process's own)."""
        pid = self.process.pid
        if os.environ.get("SOAK_PROXY_WRAPPER"):  # the proxy is the wrapper's child
            children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
            pid = int(children[0]) if children else pid
        try:
            c = http.client.HTTPConnection(HOST, int(self.env["PIXXEL_PROXY_LISTEN_PORT"]), timeout=2)
            c.request("GET", "/admin/stats", headers={"Authorization": f"Bearer {admin_token}"})
            cached = json.loads(c.getresponse().read())["memory"]["bytes"] // 1024
            c.close()
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        self.rss.setdefault(pid, []).append((time.monotonic(), int(line.split()[1]), cached))
        except (OSError, ValueError, KeyError, http.client.HTTPException):
            pass

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()


class Redis:
    """The instances' redis-server: stopped, killed, started again empty; trouble recorded."""

    def __init__(self, scratch):
        self.port = free_port()
        self.log = open(os.path.join(scratch, "redis.log"), "ab")
        self.process = None
        self.lock = threading.Lock()
        self.trouble = []  # [start, end] monotonic: Redis stopped, dead, or just back

    def start(self):
        self.process = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", HOST, "--save", "",
                                         "--appendonly", "no", "--protected-mode", "yes"], stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((HOST, self.port), timeout=1) as c:
                    c.sendall(b"PING\r\n")
                    if c.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise SystemExit("soak: redis-server did not start")

    @property
    def url(self):
        return f"redis://{HOST}:{self.port}"

    def event(self, how):
        started = time.monotonic()
        with self.lock:
            self.trouble.append([started, float("inf")])
        if how == "redis SIGSTOP 10 s":
            self.process.send_signal(signal.SIGSTOP)
            time.sleep(10)
            self.process.send_signal(signal.SIGCONT)
        else:  # killed, then started again empty 3 s later
            self.process.kill()
            self.process.wait()
            time.sleep(3)
            self.start()
        with self.lock:
            self.trouble[-1][1] = time.monotonic()

    def settled(self, t):
        """Up, with no trouble in the REDIS_SETTLE seconds before `t`."""
        with self.lock:
            return not any(start <= t and t - REDIS_SETTLE <= end for start, end in self.trouble)

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class Client:
    """One keep-alive HTTP/1.1 connection per instance; each request goes to one instance,
    chosen at random when there are several; reconnects after an error."""

    def __init__(self, port, token, rng=None):
        self.ports = port if isinstance(port, list) else [port]
        self.rng = rng or random.Random()
        self.connections = {}
        self.port = self.ports[0]
        self.token = token
        self.conn = None
        self.opened_at = self.used_at = 0.0

    def pick(self, port=None):
        """The instance of the next request (`port`, or one at random)."""
        chosen = port if port is not None else self.rng.choice(self.ports)
        if chosen != self.port:
            self.connections[self.port] = (self.conn, self.opened_at, self.used_at)
            self.port = chosen
            self.conn, self.opened_at, self.used_at = self.connections.pop(chosen, (None, 0.0, 0.0))

    def request(self, method, target, body=None, headers=None, token=True, port=None):
        self.pick(port)
        all_headers = {"Accept": "application/json"}
        if token and self.token:
            all_headers["Authorization"] = f"Bearer {self.token}"
        all_headers.update(headers or {})
        started = time.monotonic()
        # A write is not retried, so it goes on a fresh connection rather than on one the
        # server may be closing as idle (what any careful client does).
        if method not in ("GET", "HEAD") and started - self.used_at > 1.0:
            self.close()
        for attempt in range(2):
            try:
                if self.conn is None:
                    self.opened_at = time.monotonic()
                    self.conn = http.client.HTTPConnection(HOST, self.port, timeout=UPSTREAM_TIMEOUT + 20)
                self.conn.request(method, target, body=body, headers=all_headers)
                response = self.conn.getresponse()
                data = response.read()
                self.used_at = time.monotonic()
                if response.getheader("Connection", "").lower() == "close":
                    self.conn.close()
                    self.conn = None
                return response.status, {k.lower(): v for k, v in response.getheaders()}, data, started, time.monotonic()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as error:
                # A keep-alive connection the server closed between requests: one fresh try.
                self.close()
                if attempt == 0 and method in ("GET", "HEAD") and time.monotonic() - started < 0.5:
                    started = time.monotonic()
                    continue
                return None, {}, str(error).encode(), started, time.monotonic()
            except OSError as error:
                self.close()
                return None, {}, str(error).encode(), started, time.monotonic()

    def close(self):
        if self.conn:
            self.conn.close()
        self.conn = None

    def close_all(self):
        self.close()
        for conn, _, _ in self.connections.values():
            if conn:
                conn.close()
        self.connections = {}


LEDGER = Ledger()


class Soak:
    def __init__(self, seconds, clients, seed, rate, burst):
        self.seconds, self.client_count, self.seed = seconds, clients, seed
        self.rate, self.burst = rate, burst
        self.scratch = tempfile.mkdtemp(prefix="pixxel-soak-")
        self.stop_at = None
        self.newest_jobs = {}  # workflow -> [(id, status)] from the latest full list, for watchers
        self.jobs_lock = threading.Lock()
        self.instances = int(os.environ.get("SOAK_INSTANCES", "1"))
        self.redis = None
        # Across clients: per job, the versions shown, each with when its first answer ended;
        # per workflow, the jobs created and when their creation was acknowledged.
        self.history, self.acked = {}, {}
        self.disk_faults = os.environ.get("SOAK_DISK_FAULTS") == "1"
        self.created = []  # (job id, proxy name): creations answered 200
        self.history_lock = threading.Lock()

    # -- set-up ---------------------------------------------------------------------------
    def start(self):
        self.sim_port = free_port()
        sim_log = open(os.path.join(self.scratch, "sim.log"), "wb")
        self.sim = subprocess.Popen([os.path.join(BIN, "pixxel-sim"), "--host", HOST, "--port", str(self.sim_port),
                                     "--api-key", SIM_KEY, "--workflows", "4", "--jobs", "30", "--pending-seconds", "3",
                                     "--running-seconds", "40", "--seed", str(self.seed)], stderr=sim_log, stdout=sim_log)
        self.workflows = []
        for _ in range(200):
            with open(os.path.join(self.scratch, "sim.log")) as f:
                self.workflows = [line.split()[-1] for line in f if line.startswith("pixxel-sim: workflow ")]
            if self.workflows:
                break
            time.sleep(0.05)
        if not self.workflows:
            raise SystemExit("soak: pixxel-sim did not start")
        clients_file = os.path.join(self.scratch, "clients")
        self.tokens = {}
        for name, scopes in [("reader", "read"), ("writer", "read,write"), ("admin", "read,write,admin")]:
            out = subprocess.run([os.path.join(BIN, "pixxel-proxy"), "token", "add", name, "--scopes", scopes,
                                  "--clients-file", clients_file], capture_output=True, text=True, check=True)
            self.tokens[name] = out.stdout.strip()
        env = dict(os.environ)
        env.update({
            "PIXXEL_PROXY_LISTEN_HOST": HOST,
            "PIXXEL_PROXY_UPSTREAM_URL": f"http://{HOST}:{self.sim_port}", "PIXXEL_API_KEY": SIM_KEY,
            "PIXXEL_PROXY_AUTH_CLIENTS_FILE": clients_file,
            "PIXXEL_PROXY_UPSTREAM_REQUESTS_PER_SECOND": str(self.rate), "PIXXEL_PROXY_UPSTREAM_BURST": str(self.burst),
            "PIXXEL_PROXY_UPSTREAM_TIMEOUT_SECONDS": str(int(UPSTREAM_TIMEOUT)),
            "PIXXEL_PROXY_CACHE_TTL_ACTIVE_JOB_SECONDS": "3", "PIXXEL_PROXY_CACHE_TTL_JOB_LIST_SECONDS": "4",
            "PIXXEL_PROXY_CACHE_STALE_WHILE_REVALIDATE_SECONDS": "5", "PIXXEL_PROXY_LOG_LEVEL": "warning",
        })
        if self.instances > 1:
            self.redis = Redis(self.scratch)
            self.redis.start()
            env.update({"PIXXEL_PROXY_SHARED_REDIS_URL": self.redis.url, "PIXXEL_PROXY_SHARED_INSTANCES": str(self.instances)})
        cache_root = self.scratch
        if self.disk_faults:
            cache_root = self.mount_small_disk()
        self.proxies = []
        for index in range(self.instances):
            name = "proxy" if self.instances == 1 else f"proxy-{'AB'[index]}"
            own = dict(env, PIXXEL_PROXY_LISTEN_PORT=str(free_port()),
                       PIXXEL_PROXY_CACHE_DIRECTORY=os.path.join(cache_root, "cache" if self.instances == 1 else f"cache-{'AB'[index]}"))
            self.proxies.append(Proxy(self.scratch, own, name))
            self.proxies[-1].start()
        self.proxy = self.proxies[0]
        self.ports = [int(p.env["PIXXEL_PROXY_LISTEN_PORT"]) for p in self.proxies]
        self.proxy_port = self.ports[0]
        self.t0 = time.monotonic()
        self.stop_at = self.t0 + self.seconds

    # -- the disk-fault mode -----------------------------------------------------------------
    def mount_small_disk(self):
        if os.geteuid() != 0:
            raise SystemExit("soak: SOAK_DISK_FAULTS=1 needs root (it loop-mounts a small filesystem)")
        image, self.mount_point = os.path.join(self.scratch, "disk.img"), os.path.join(self.scratch, "disk")
        os.makedirs(self.mount_point)
        subprocess.run(["truncate", "-s", "48M", image], check=True)
        subprocess.run(["mkfs.ext4", "-q", "-F", image], check=True)
        subprocess.run(["mount", "-o", "loop", image, self.mount_point], check=True)
        return self.mount_point

    def disk_event(self, how):
        if how == "disk full":
            # Filled to the last block, by a file the soak removes at "disk space back".
            with open(os.path.join(self.mount_point, "filler"), "wb") as f:
                try:
                    while True:
                        f.write(b"\0" * (1 << 20))
                        f.flush()
                except OSError:
                    pass
        elif how == "disk space back":
            os.remove(os.path.join(self.mount_point, "filler"))
        elif how == "disk read-only":
            # Immutable, as an operator's `chattr +i` makes it: a remount read-only is refused
            # while the store is open for writing.
            subprocess.run(["chattr", "-R", "+i", self.mount_point], check=True)
        elif how == "disk writable":
            subprocess.run(["chattr", "-R", "-i", self.mount_point], check=True)

    def unmount_small_disk(self):
        if self.disk_faults and getattr(self, "mount_point", None):
            subprocess.run(["chattr", "-R", "-i", self.mount_point], capture_output=True)
            subprocess.run(["umount", self.mount_point], capture_output=True)

    def check_audit(self):
        """After the proxies stopped: each creation answered 200 is in an audit store, or named
        in its proxy's journal as written there instead."""
        audited = set()
        for proxy in self.proxies:
            out = subprocess.run([os.path.join(BIN, "pixxel-proxy"), "audit"], env=proxy.env, capture_output=True, text=True)
            for line in out.stdout.splitlines()[1:]:
                fields = line.split("\t")
                if len(fields) > 4:
                    audited.add(fields[4])
            with open(os.path.join(self.scratch, f"{proxy.name}.log"), errors="replace") as f:
                for line in f:
                    if "audit entry written to the journal" in line:
                        audited.update(word.split("=", 1)[1] for word in line.split() if word.startswith("job_id="))
        for job_id, name in self.created:
            LEDGER.check("no_unaudited_creation", job_id in audited, f"job {job_id} created through {name}: no audit entry anywhere")

    def sim_control(self, path):
        c = http.client.HTTPConnection(HOST, self.sim_port, timeout=5)
        c.request("POST" if path.startswith("/_sim/faults") else "GET", path, headers={"Authorization": SIM_KEY})
        data = c.getresponse().read()
        c.close()
        return json.loads(data)

    def running(self):
        return time.monotonic() < self.stop_at

    # -- checks ---------------------------------------------------------------------------
    def judge(self, kind, status, headers, body, started, ended, method="GET", opened=None):
        LEDGER.count(status if status is not None else "conn-error")
        if status is None:
            # A connection opened before a restart may be dead when next used.
            LEDGER.check("no_unexpected_disconnect", any(p.in_window(min(started, opened or started), ended) for p in self.proxies),
                         f"{kind}: {body[:120]!r} at +{started - self.t0:.1f}s")
            return None
        LEDGER.check("answer_time", ended - started <= UPSTREAM_TIMEOUT + ANSWER_SLACK,
                     f"{kind}: {status} after {ended - started:.2f}s at +{started - self.t0:.1f}s")
        if status >= 400 and method != "HEAD":
            try:
                error = json.loads(body)["error"]
                ok = isinstance(error.get("code"), str) and isinstance(error.get("message"), str)
            except (ValueError, KeyError, TypeError, AttributeError):
                ok = False
            if status == 429:
                ok = ok and "retry-after" in headers
            LEDGER.check("error_shape", ok, f"{kind}: {status} {body[:160]!r}")
        if status == 200 and method != "HEAD":
            try:
                return json.loads(body)
            except ValueError:
                LEDGER.check("right_resource", False, f"{kind}: 200 with a body that is not JSON: {body[:80]!r}")
        return None

    def see(self, seen, job, kind, started=None, ended=None):
        """A client saw this version of a job: never an older one after a newer one, and (with
        `started` and `ended`) never older than any request's answer showed WINDOW before."""
        job_id, updated = job.get("id"), parse_time(job.get("updated_at"))
        if job_id is None or updated is None:
            return
        before = seen.get(job_id)
        # The instance is the kind's suffix (`list3@PORT`): going back between two instances is a
        # cross-instance failure, counted apart during Redis trouble; within one, it always counts.
        instance = kind.rpartition("@")[2]
        ok = before is None or updated >= before[0]
        detail = f"{kind}: job {job_id} updated_at {job.get('updated_at')} after {before[1] if before else ''}"
        if before is not None and before[2] != instance and started is not None:
            self.check_across("no_going_back", ok, started, detail)
        else:
            LEDGER.check("no_going_back", ok, detail)
        if before is None or updated > before[0]:
            seen[job_id] = (updated, f"{job.get('updated_at')} via {instance}", instance)
        if started is not None:
            self.see_globally(job_id, updated, job.get("updated_at"), started, ended, kind)

    def see_globally(self, job_id, updated, text, started, ended, kind):
        with self.history_lock:
            versions = self.history.setdefault(job_id, [])  # (updated, first answer's end, text), ascending
            newer = [v for v in versions if v[0] > updated and v[1] + WINDOW < started]
            known = next((i for i, v in enumerate(versions) if v[0] == updated), None)
            if known is None:
                versions.append((updated, ended, text))
                versions.sort()
                del versions[:-8]
            elif ended < versions[known][1]:
                versions[known] = (updated, ended, text)
        detail = ""
        if newer:
            shown = newer[-1]
            detail = (f"{kind}: job {job_id} at {text}, started +{started - self.t0:.2f}s, after an answer showed {shown[2]} "
                      f"at +{shown[1] - self.t0:.2f}s")
        self.check_across("never_older_global", not newer, started, detail)

    def check_across(self, name, ok, started, detail):
        """A cross-instance check: counted when Redis was settled, reported apart otherwise."""
        if self.redis is None or self.redis.settled(started):
            LEDGER.check(name, ok, detail)
        else:
            LEDGER.check_trouble(name, ok, detail)

    def check_no_lost_job(self, workflow, jobs, started, kind):
        """A full list holds every job whose creation was acknowledged WINDOW before it started."""
        ids = {j.get("id") for j in jobs}
        with self.history_lock:
            acked = [(job_id, at) for job_id, at in self.acked.get(workflow, []) if at + WINDOW < started]
        for job_id, at in acked:
            self.check_across("no_lost_job", job_id in ids,
                              started, f"{kind}: list started +{started - self.t0:.2f}s lacks {job_id}, acknowledged at +{at - self.t0:.2f}s")

    def check_list(self, document, workflow, filters, seen, kind, started=None, ended=None):
        jobs = document.get("jobs") if isinstance(document, dict) else None
        if not LEDGER.check("right_resource", isinstance(jobs, list), f"{kind}: list without jobs"):
            return []
        for job in jobs:
            ok = job.get("workflow_id", workflow) == workflow
            if "status" in filters:
                ok = ok and str(job.get("status", "")).lower() == filters["status"]
            if "created_by" in filters:
                ok = ok and job.get("created_by") == filters["created_by"]
            if "created_on" in filters:
                created = parse_time(job.get("created_at"))
                ok = ok and created is not None and datetime.datetime.fromtimestamp(created, datetime.timezone.utc).date().isoformat() == filters["created_on"]
            LEDGER.check("right_resource", ok, f"{kind}: job {job.get('id')} ({job.get('status')}, {job.get('created_by')}) in {workflow} {filters}")
            self.see(seen, job, kind, started, ended)
        if not filters and started is not None:
            self.check_no_lost_job(workflow, jobs, started, kind)
        return jobs

    # -- clients --------------------------------------------------------------------------
    def pace(self, low, high):
        time.sleep(random.uniform(low, high))

    def list_poller(self, index, filtered):
        seen = {}
        rng = random.Random(self.seed * 100 + index)
        client = Client(self.ports, self.tokens["reader"], rng)
        while self.running():
            workflow = rng.choice(self.workflows)
            filters = {}
            if filtered:
                today = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
                filters = rng.choice([{"status": "running"}, {"status": "completed"}, {"created_by": "user-api"},
                                      {"created_on": today}, {"status": "pending", "created_by": "user-api"}])
            query = ("?" + urllib.parse.urlencode(filters)) if filters else ""
            headers = {"Cache-Control": "no-cache"} if rng.random() < 0.05 else None
            status, h, body, t0, t1 = client.request("GET", f"/v0/workflows/{workflow}/jobs{query}", headers=headers)
            document = self.judge("list", status, h, body, t0, t1)
            if document is not None:
                jobs = self.check_list(document, workflow, filters, seen, f"list{index}@{client.port}", t0, t1)
                if not filters:
                    with self.jobs_lock:
                        self.newest_jobs[workflow] = [(j.get("id"), j.get("status")) for j in jobs]
            self.pace(0.05, 0.6)
        client.close()

    def detail_watcher(self, index):
        seen = {}
        rng = random.Random(self.seed * 100 + index)
        client = Client(self.ports, self.tokens["reader"], rng)
        while self.running():
            workflow = rng.choice(self.workflows)
            with self.jobs_lock:
                jobs = list(self.newest_jobs.get(workflow, []))
            if not jobs:
                self.pace(0.1, 0.2)
                continue
            active = [j for j, s in jobs if s in ("running", "pending")]
            job_id = rng.choice(active) if active and rng.random() < 0.8 else rng.choice(jobs)[0]
            method = "HEAD" if rng.random() < 0.1 else "GET"
            target = f"/v0/workflows/{workflow}/jobs/{urllib.parse.quote(job_id, safe='')}"
            status, h, body, t0, t1 = client.request(method, target)
            document = self.judge("detail", status, h, body, t0, t1, method)
            if document is not None:
                ok = document.get("id") == job_id and document.get("workflow_id", workflow) == workflow
                LEDGER.check("right_resource", ok, f"detail {job_id} answered with {document.get('id')}")
                self.see(seen, document, f"detail{index}@{client.port}", t0, t1)
            self.pace(0.05, 0.4)
        client.close()

    def writer(self, index):
        seen = {}
        rng = random.Random(self.seed * 100 + index)
        client = Client(self.ports, self.tokens["writer"], rng)
        while self.running():
            workflow = rng.choice(self.workflows)
            status, h, body, t0, t1 = client.request("POST", f"/v0/workflows/{workflow}/jobs?project_id=proj-soak",
                                                     body=b"", headers={"Content-Type": "application/json"})
            created = self.judge("create", status, h, body, t0, t1, "POST", opened=client.opened_at)
            if created is not None and created.get("id"):
                job_id = created["id"]
                with self.history_lock:
                    self.acked.setdefault(workflow, []).append((job_id, t1))
                    self.created.append((job_id, next(p.name for p in self.proxies if int(p.env["PIXXEL_PROXY_LISTEN_PORT"]) == client.port)))
                here = client.port
                self.see(seen, created, f"writer{index}@{here}", t0, t1)
                status, h, body, t0, t1 = client.request("GET", f"/v0/workflows/{workflow}/jobs/{job_id}", port=here)
                document = self.judge("read-your-write detail", status, h, body, t0, t1)
                if status == 200 and document is not None:
                    LEDGER.check("read_your_writes", document.get("id") == job_id, f"detail of new {job_id}: {document.get('id')}")
                    self.see(seen, document, f"writer{index}@{here}", t0, t1)
                elif status is not None and status < 500:
                    LEDGER.check("read_your_writes", False, f"detail of new {job_id}: {status} at +{t0 - self.t0:.1f}s")
                # The next full list on each instance: the creator's own at once, the others
                # once the window has passed (no_lost_job checks those).
                for port in [here] + [p for p in self.ports if p != here]:
                    if port != here:
                        time.sleep(WINDOW)
                    status, h, body, t0, t1 = client.request("GET", f"/v0/workflows/{workflow}/jobs", port=port)
                    document = self.judge("read-your-write list", status, h, body, t0, t1)
                    if document is not None:
                        jobs = self.check_list(document, workflow, {}, seen, f"writer{index}@{port}", t0, t1)
                        if port == here:
                            LEDGER.check("read_your_writes", any(j.get("id") == job_id for j in jobs),
                                         f"list after creating {job_id} lacks it ({h.get('cache-status')}, age {h.get('age')}) at +{t0 - self.t0:.1f}s")
            self.pace(3, 7)
        client.close()

    def pass_through(self, index):
        client = Client(self.ports, self.tokens["reader"], random.Random(self.seed * 100 + index))
        while self.running():
            status, h, body, t0, t1 = client.request("GET", "/v0/workflows")
            # Pass-through: the upstream's bytes, garbage included, are not the proxy's to judge.
            self.judge("pass-through", status, h, b"" if status == 200 else body, t0, t1, "HEAD" if status == 200 else "GET")
            self.pace(0.5, 1.5)
        client.close()

    def hostile(self, index):
        """Careless and hostile requests: each must get its 4xx, never a 2xx or a 5xx."""
        rng = random.Random(self.seed * 100 + index)
        reader = Client(self.ports, self.tokens["reader"], rng)
        anonymous = Client(self.ports, None, rng)
        while self.running():
            workflow = rng.choice(self.workflows)
            cases = [
                (anonymous, "GET", f"/v0/workflows/{workflow}/jobs", None, None, {401}),
                (reader, "POST", f"/v0/workflows/{workflow}/jobs?project_id=x", b"", None, {403}),
                (reader, "GET", f"/v0/workflows/{workflow}/jobs", b"POST /x HTTP/1.1\r\n\r\n", None, {400}),
                (reader, "GET", f"/v0/workflows/{workflow}/jobs?status=running&status=failed", None, None, {400}),
                (reader, "GET", f"/v0/workflows/{workflow}/jobs?created_on=yesterday", None, None, {400}),
                (reader, "GET", f"/v0/workflows/{workflow}/jobs/has%20space", None, None, {404}),
                (reader, "GET", f"/v0/workflows/{workflow}/jobs/a%2Fb", None, None, {400, 404}),
                (reader, "GET", f"/v0/workflows/{workflow}/jobs", None, {"X-HTTP-Method-Override": "POST"}, {400}),
                (reader, "GET", f"/v0/workflows/{workflow}/jobs?_method=POST", None, None, {400}),
            ]
            client, method, target, body, headers, expected = rng.choice(cases)
            status, h, data, t0, t1 = client.request(method, target, body=body, headers=headers)
            self.judge("hostile", status, h, data, t0, t1, method)
            if status is not None:
                # 429/503/504 are the budget's and the upstream's, not a verdict on the request.
                # A 404 comes from the upstream, so its faults may show instead.
                LEDGER.check("refused_early", status in expected or (status in (429, 500, 502, 503, 504) and 404 in expected),
                             f"{method} {target} {headers or ''}: {status}, expected {sorted(expected)}")
            client.close()
            self.pace(0.2, 0.8)

    # -- chaos ----------------------------------------------------------------------------
    def chaos(self):
        rng = random.Random(self.seed)
        phases = [
            "latency_ms=0&error_rate=0&rate_429=0&hang_rate=0&garbage_rate=0",
            "latency_ms=200&error_rate=0&rate_429=0&hang_rate=0&garbage_rate=0",
            "latency_ms=0&error_rate=0.3&rate_429=0&hang_rate=0&garbage_rate=0",
            "latency_ms=0&error_rate=0&rate_429=0.15&retry_after=2&hang_rate=0&garbage_rate=0",
            "latency_ms=50&error_rate=0&rate_429=0&hang_rate=0.1&garbage_rate=0",
            "latency_ms=0&error_rate=0&rate_429=0&hang_rate=0&garbage_rate=0.1",
            "latency_ms=100&error_rate=0.1&rate_429=0.05&retry_after=3&hang_rate=0.03&garbage_rate=0.03",
        ]
        # Restarts in the first 45% of the run, so the last process lives long enough to show
        # whether its memory is flat after warm-up.
        events = sorted([(0.12, "SIGHUP"), (0.2, "kill -9"), (0.3, "SIGTERM"), (0.38, "kill -9"), (0.45, "SIGTERM")])
        if self.redis is not None:
            events += [(0.55, "redis SIGSTOP 10 s"), (0.75, "redis kill")]
        if self.disk_faults:
            events += [(0.5, "disk full"), (0.58, "disk space back"), (0.66, "disk read-only"), (0.7, "SIGTERM"),
                       (0.8, "disk writable")]
            events.sort()
        if os.environ.get("SOAK_RESTARTS") == "0":  # a steady run, for memory
            events = [] if os.environ.get("SOAK_PROXY_WRAPPER") else [(0.12, "SIGHUP")]
        self.events = []
        self.restarts = 0
        next_phase = self.t0
        next_sample = self.t0
        while self.running():
            now = time.monotonic()
            if now >= next_phase:
                phase = rng.choice(phases)
                self.sim_control("/_sim/faults?" + phase)
                self.events.append((now - self.t0, "faults " + phase.replace("&", " ")))
                next_phase = now + rng.uniform(8, 20)
            if events and now - self.t0 >= events[0][0] * self.seconds:
                _, how = events.pop(0)
                if how.startswith("disk"):
                    self.events.append((now - self.t0, how))
                    self.disk_event(how)
                elif how.startswith("redis"):
                    self.events.append((now - self.t0, how))
                    threading.Thread(target=self.redis.event, args=(how,), daemon=True).start()
                else:
                    # The instances take turns.
                    proxy = self.proxies[self.restarts % len(self.proxies)]
                    self.restarts += 1
                    self.events.append((now - self.t0, how + ("" if len(self.proxies) == 1 else f" {proxy.name}")))
                    proxy.restart(how)
            if now >= next_sample:
                self.proxy.sample_rss(self.tokens["admin"])
                next_sample = now + 2
            time.sleep(0.1)
        self.sim_control("/_sim/faults?" + phases[0])

    # -- after the run --------------------------------------------------------------------
    def check_calls_per_second(self):
        stats = self.sim_control("/_sim/stats?arrivals=1")
        offset = time.monotonic() - stats["now_monotonic"]  # sim's monotonic clock -> ours
        arrivals = sorted(t + offset for t in stats["arrivals"])
        lifetimes = sorted(start for p in self.proxies for _, start in p.lifetimes[1:])
        trouble = list(self.redis.trouble) if self.redis else []
        worst, worst_across = 0, 0
        j = 0
        for i, start in enumerate(arrivals):
            while j < len(arrivals) and arrivals[j] < start + 1:
                j += 1
            count = j - i
            # A window that holds a restart counts two processes' budgets: reported apart.
            crosses = any(start < boundary <= start + 1.05 for boundary in lifetimes) or \
                any(begin - 1.05 <= start <= end + 1.05 for begin, end in trouble)
            if crosses:
                worst_across = max(worst_across, count)
            else:
                worst = max(worst, count)
        limit = self.rate + self.burst
        LEDGER.check("calls_per_second", worst <= limit, f"{worst} calls in one second (limit {limit})")
        self.calls_summary = (len(arrivals), worst, worst_across, limit)

    def check_rss(self):
        pid, start = self.proxy.lifetimes[-1]
        samples = [(t - start, kb, cached) for t, kb, cached in self.proxy.rss.get(pid, [])]
        if not samples and self.proxy.rss:  # under a wrapper, sampled under the child's pid
            samples = [(t - start, kb, cached) for t, kb, cached in list(self.proxy.rss.values())[-1]]
        warm = min(60.0, (self.stop_at - start) / 3)
        after = [(kb, cached) for t, kb, cached in samples if t >= warm]
        if len(after) < 6:
            LEDGER.check("rss_flat", False, f"too few samples after warm-up ({len(after)}): run longer")
            self.rss_summary = None
            return
        first, first_cached = sorted(after[:3])[1]
        last, last_cached = sorted(after[-3:])[1]
        growth = (last - first) - max(0, last_cached - first_cached)
        LEDGER.check("rss_flat", growth <= 4096,
                     f"RSS {first / 1024:.1f} MB at +{warm:.0f}s, {last / 1024:.1f} MB at the end; the cache held "
                     f"{first_cached / 1024:.1f} then {last_cached / 1024:.1f} MB")
        self.rss_summary = (samples[0][1] if samples else 0, first, last, max(kb for _, kb, _ in samples), warm, samples[-1][0],
                            first_cached, last_cached)

    def run(self):
        self.start()
        kinds = []
        n = self.client_count
        for i in range(n):
            role = i % 10
            if role in (0, 1, 2):
                kinds.append(threading.Thread(target=self.list_poller, args=(i, False)))
            elif role in (3, 4):
                kinds.append(threading.Thread(target=self.list_poller, args=(i, True)))
            elif role in (5, 6):
                kinds.append(threading.Thread(target=self.detail_watcher, args=(i,)))
            elif role == 7 and os.environ.get("SOAK_WRITERS") != "0":
                kinds.append(threading.Thread(target=self.writer, args=(i,)))
            elif role == 7:
                kinds.append(threading.Thread(target=self.detail_watcher, args=(i,)))
            elif role == 8:
                kinds.append(threading.Thread(target=self.pass_through, args=(i,)))
            else:
                kinds.append(threading.Thread(target=self.hostile, args=(i,)))
        for t in kinds:
            t.daemon = True
            t.start()
        try:
            self.chaos()
        finally:
            for t in kinds:
                t.join(timeout=UPSTREAM_TIMEOUT + 25)
            self.check_calls_per_second()
            self.check_rss()
            self.fetches = [self.upstream_fetches(p) for p in self.proxies]
            for p in self.proxies:
                p.stop()
            if self.redis:
                self.redis.stop()
            self.check_audit()
            self.unmount_small_disk()
            self.sim.terminate()
            self.sim.wait()

    def upstream_fetches(self, proxy):
        try:
            c = http.client.HTTPConnection(HOST, int(proxy.env["PIXXEL_PROXY_LISTEN_PORT"]), timeout=5)
            c.request("GET", "/admin/stats", headers={"Authorization": f"Bearer {self.tokens['admin']}"})
            return json.loads(c.getresponse().read()).get("upstream_fetches")
        except (OSError, ValueError, http.client.HTTPException):
            return None

    def report(self):
        total_violations = sum(len(v) for v in LEDGER.violations.values())
        print(f"\nsoak: {self.seconds:.0f} s, {len(self.proxies)} instance(s), {self.client_count} clients, seed {self.seed}, budget {self.rate:g}/s burst {self.burst:g}, "
              f"{LEDGER.requests} requests")
        print("events: " + "; ".join(f"+{t:.0f}s {what}" for t, what in self.events if not what.startswith("faults")))
        print("answers: " + ", ".join(f"{k}: {v}" for k, v in sorted(LEDGER.statuses.items(), key=lambda kv: str(kv[0]))))
        calls, worst, across, limit = self.calls_summary
        print(f"upstream: {calls} calls; busiest one-second window {worst} (limit {limit:g}); across a restart or Redis trouble {across}")
        if len(self.proxies) > 1:
            print("instances: " + ", ".join(f"{p.name} on {p.env['PIXXEL_PROXY_LISTEN_PORT']}: {f} cache fetches upstream (last process)"
                                              for p, f in zip(self.proxies, self.fetches)))
        if self.rss_summary:
            start, first, last, peak, warm, length, first_cached, last_cached = self.rss_summary
            print(f"RSS of the last process ({length:.0f} s): {start / 1024:.1f} MB at start, {first / 1024:.1f} MB after "
                  f"{warm:.0f} s warm-up, {last / 1024:.1f} MB at the end, peak {peak / 1024:.1f} MB; the memory tier held "
                  f"{first_cached / 1024:.1f} MB after warm-up, {last_cached / 1024:.1f} MB at the end")
        print()
        print(f"| invariant | checks | violations |")
        print(f"| --- | ---: | ---: |")
        for name, meaning in INVARIANTS:
            print(f"| {name}: {meaning} | {LEDGER.checks[name]} | {len(LEDGER.violations[name])} |")
        for name, _ in INVARIANTS:
            for example in LEDGER.violations[name][:5]:
                print(f"  {name}: {example}")
        if self.redis is not None:
            print("\nDuring Redis trouble (stopped, killed, or back less than "
                  f"{REDIS_SETTLE:g} s), reported apart, not failing the run:")
            for name in TROUBLE:
                print(f"  {name}: {LEDGER.trouble_checks.get(name, 0)} checks, {len(LEDGER.trouble_violations.get(name, []))} violations")
                for example in LEDGER.trouble_violations.get(name, [])[:3]:
                    print(f"    {example}")
        print(f"\nscratch: {self.scratch}" if os.environ.get("SOAK_KEEP") or total_violations else "")
        return total_violations


def main():
    seconds = float(os.environ.get("SOAK_SECONDS", "300"))
    soak = Soak(seconds, int(os.environ.get("SOAK_CLIENTS", "20")), int(os.environ.get("SOAK_SEED", str(int(time.time()) % 100000))),
                float(os.environ.get("SOAK_RATE", "20")), float(os.environ.get("SOAK_BURST", "20")))
    try:
        soak.run()
    finally:
        for proxy in getattr(soak, "proxies", []):
            proxy.stop()
        soak.unmount_small_disk()
        if soak.redis:
            soak.redis.stop()
    violations = soak.report()
    if not violations and not os.environ.get("SOAK_KEEP"):
        shutil.rmtree(soak.scratch, ignore_errors=True)
    sys.exit(1 if violations else 0)


if __name__ == "__main__":
    main()
