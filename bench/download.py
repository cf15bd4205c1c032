#!/usr/bin/env python3
"""The download benchmark: one large pass-through download, loopback only.

A job download of DOWNLOAD_BYTES (default 1 GiB) from pixxel-sim, fetched with curl directly,
through pixxel-proxy (streamed pass-through) and through nginx with `proxy_buffering off`,
alternated for DOWNLOAD_ROUNDS rounds (default 3). For each it reports the throughput (MiB/s,
the best and the median round) and the growth of the resident memory of the process in the
middle (the proxy, or nginx's worker) over its size just before the round, sampled every 10 ms.
The simulator generates the bytes as it sends them, so the direct row is the ceiling.

Usage: bench/download.py [--bytes N] [--rounds N] [--out FILE]
Needs .build/release (make release), curl and /usr/sbin/nginx.
"""
import argparse
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

SIM_KEY = "download-sim-key"

NGINX_CONF = """{user}daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    proxy_temp_path {dir}/temp;
    client_body_temp_path {dir}/temp;
    upstream sim {{ server {host}:{sim_port}; keepalive 4; }}
    server {{
        listen {host}:{port};
        location /v0/ {{
            if ($http_authorization != "Bearer {token}") {{ return 401; }}
            proxy_pass http://sim;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Authorization "{key}";
            proxy_buffering off;
        }}
    }}
}}
"""


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def children(pid):
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return found


def one_download(port, target, headers, watch_pids):
    """Runs curl once; returns (MiB/s, bytes, RSS growth in KiB over the watched processes)."""
    before = sum(rss_kib(p) for p in watch_pids)
    peak = before
    done = threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, sum(rss_kib(p) for p in watch_pids))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    command = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{size_download} %{speed_download}"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    out = subprocess.run(command + [f"http://{HOST}:{port}{target}"], capture_output=True, text=True, timeout=600).stdout.split()
    done.set()
    sampler.join()
    status, size, speed = int(out[0]), int(out[1]), float(out[2])
    if status != 200:
        raise SystemExit(f"download: HTTP {status} from port {port}")
    return speed / (1 << 20), size, peak - before


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bytes", type=int, default=int(os.environ.get("DOWNLOAD_BYTES", str(1 << 30))))
    parser.add_argument("--rounds", type=int, default=int(os.environ.get("DOWNLOAD_ROUNDS", "3")))
    parser.add_argument("--out", help="append the markdown table to this file")
    args = parser.parse_args()
    if not os.path.exists("/usr/sbin/nginx"):
        raise SystemExit("download: /usr/sbin/nginx is missing (apt-get install nginx-light)")
    scratch = tempfile.mkdtemp(prefix="pixxel-download-")
    processes = []
    try:
        sim_port = free_port()
        sim = subprocess.Popen([os.path.join(BIN, "pixxel-sim"), "--host", HOST, "--port", str(sim_port), "--api-key", SIM_KEY,
                                "--workflows", "1", "--jobs", "3"], stderr=subprocess.DEVNULL)
        processes.append(sim)
        sim_headers = {"Authorization": SIM_KEY}
        if not wait_until(lambda: http_get(sim_port, "/_sim/workflows", sim_headers)[0] == 200):
            raise SystemExit("download: pixxel-sim did not start")
        workflow = json.loads(http_get(sim_port, "/_sim/workflows", sim_headers)[1])["workflows"][0]
        job = json.loads(http_get(sim_port, f"/v0/workflows/{workflow}/jobs", sim_headers)[1])["jobs"][0]["id"]
        target = f"/v0/workflows/{workflow}/jobs/{job}/download?size={args.bytes}"

        token = subprocess.run([os.path.join(BIN, "pixxel-proxy"), "token", "add", "download", "--scopes", "read",
                                "--clients-file", os.path.join(scratch, "clients")], capture_output=True, text=True, check=True).stdout.strip()
        client_headers = {"Authorization": f"Bearer {token}"}
        proxy_port = free_port()
        env = dict(os.environ, PIXXEL_PROXY_LISTEN_HOST=HOST, PIXXEL_PROXY_LISTEN_PORT=str(proxy_port),
                   PIXXEL_PROXY_UPSTREAM_URL=f"http://{HOST}:{sim_port}", PIXXEL_API_KEY=SIM_KEY,
                   PIXXEL_PROXY_AUTH_CLIENTS_FILE=os.path.join(scratch, "clients"),
                   PIXXEL_PROXY_CACHE_DIRECTORY=os.path.join(scratch, "proxy-cache"), PIXXEL_PROXY_LOG_LEVEL="warning")
        proxy = subprocess.Popen([os.path.join(BIN, "pixxel-proxy"), "serve"], env=env, stderr=subprocess.DEVNULL)
        processes.append(proxy)
        if not wait_until(lambda: http_get(proxy_port, "/readyz", {})[0] == 200):
            raise SystemExit("download: pixxel-proxy did not start")

        nginx_port = free_port()
        directory = os.path.join(scratch, "nginx")
        os.makedirs(os.path.join(directory, "temp"))
        with open(os.path.join(directory, "nginx.conf"), "w") as f:
            f.write(NGINX_CONF.format(dir=directory, host=HOST, port=nginx_port, token=token, sim_port=sim_port, key=SIM_KEY,
                                      user="user root;\n" if os.geteuid() == 0 else ""))
        nginx = subprocess.Popen(["/usr/sbin/nginx", "-p", directory, "-c", os.path.join(directory, "nginx.conf"),
                                  "-e", os.path.join(directory, "error.log")])
        processes.append(nginx)
        if not wait_until(lambda: http_get(nginx_port, "/v0/", {})[0] == 401):
            raise SystemExit("download: nginx did not start")
        nginx_workers = children(nginx.pid)

        targets = [("direct", sim_port, sim_headers, []), ("pixxel-proxy", proxy_port, client_headers, [proxy.pid]),
                   ("nginx", nginx_port, client_headers, nginx_workers)]
        # Warm each path with a small download (connections, allocator).
        for _, port, headers, _ in targets:
            one_download(port, target.replace(f"size={args.bytes}", "size=4194304"), headers, [])
        results = {name: [] for name, _, _, _ in targets}
        for round_number in range(args.rounds):
            for name, port, headers, pids in targets:
                speed, size, growth = one_download(port, target, headers, pids)
                if size != args.bytes:
                    raise SystemExit(f"download: {name} sent {size} of {args.bytes} bytes")
                results[name].append((speed, growth))
                print(f"download: round {round_number + 1} {name}: {speed:.0f} MiB/s, RSS +{growth / 1024:.1f} MiB", file=sys.stderr)

        nginx_best = max(speed for speed, _ in results["nginx"])
        lines = ["", "## Download (streamed pass-through)", "",
                 f"One job download of {args.bytes >> 20} MiB from pixxel-sim (generated as sent), curl to /dev/null, "
                 f"{args.rounds} rounds alternated; nginx with `proxy_buffering off`. RSS growth: the process in the middle "
                 "(the proxy, nginx's worker) over its size before the round, sampled every 10 ms.", "",
                 "| path | best MiB/s | median MiB/s | / nginx (best) | peak RSS growth |", "| --- | --- | --- | --- | --- |"]
        for name, _, _, _ in targets:
            speeds = [speed for speed, _ in results[name]]
            growth = max(growth for _, growth in results[name])
            ratio = f"**{max(speeds) / nginx_best:.2f}**" if name != "direct" else f"{max(speeds) / nginx_best:.2f}"
            lines.append(f"| {name} | {max(speeds):.0f} | {statistics.median(speeds):.0f} | {ratio} | "
                         f"{'-' if name == 'direct' else f'{growth / 1024:.1f} MiB'} |")
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
