#!/usr/bin/env python3
"""Asks for one path HITS times in turn on one kept-alive connection (127.0.0.1 only), each
answer read in full before the next request: the per-hit system calls and allocations of the
server are then counted over a known number of requests.

usage: keepalive_hits.py PORT PATH AUTH_HEADER_LINE HITS
"""
import socket
import sys

port, path, auth, hits = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
conn = socket.create_connection(("127.0.0.1", port))
request = f"GET {path} HTTP/1.1\r\nHost: bench\r\n{auth}\r\n\r\n".encode()
pending = b""
for _ in range(hits):
    conn.sendall(request)
    while b"\r\n\r\n" not in pending:
        chunk = conn.recv(65536)
        if not chunk:
            sys.exit("keepalive_hits: the server closed the connection")
        pending += chunk
    head, _, pending = pending.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
    while len(pending) < length:
        pending += conn.recv(65536)
    pending = pending[length:]
