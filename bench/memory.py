#!/usr/bin/env python3
"""Memory after a burst: does Stowage give memory back when load stops? (issue 11)

    python3 bench/memory.py --stowage-bin target/release/stowage [--clients 64] [--size-mib 8]

Starts the binary on loopback (SQLite + filesystem in a fresh directory, no auth, access log
off), records its RSS idle, then runs `--rounds` bursts in which `--clients` concurrent clients
each push an image with one `--size-mib` layer (POST + PUT `?digest=` streamed, config blob,
manifest PUT) and pull it back (manifest GET, layer GET read to the end). RSS is sampled every
10 ms during the bursts (peak) and then after 1 s, 10 s and 30 s idle (steady state).
Prints one JSON object; Python stdlib only, loopback only, bounded in time.
"""

import argparse
import concurrent.futures as cf
import hashlib
import http.client
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse

HOST = "127.0.0.1"
MiB = 1 << 20
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def request(conn, method, path, body=None, headers=None, length=None):
    headers = dict(headers or {})
    if length is not None:
        headers["Content-Length"] = str(length)
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    data = response.read()
    return response.status, response.headers, data


def push_and_pull(port, client, round_no, layer_base, base_hash):
    """One client's push and pull of an image whose layer is the shared base plus 16 unique
    bytes (so every client uploads a distinct blob without holding a copy of it)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=120)
    repo = f"bench/mem/c{client}"
    suffix = f"{round_no:08d}{client:08d}".encode()
    h = base_hash.copy()
    h.update(suffix)
    layer_digest = "sha256:" + h.hexdigest()
    layer_size = len(layer_base) + len(suffix)

    def upload(digest, chunks, size):
        status, headers, _ = request(conn, "POST", f"/v2/{repo}/blobs/uploads/", b"", length=0)
        assert status == 202, status
        location = urllib.parse.urlsplit(headers["Location"])
        path = location.path + (f"?{location.query}" if location.query else "")
        sep = "&" if location.query else "?"
        status, _, body = request(conn, "PUT", f"{path}{sep}digest={digest}", chunks,
                                  {"Content-Type": "application/octet-stream"}, length=size)
        assert status == 201, (status, body)

    def chunks():
        view = memoryview(layer_base)
        for i in range(0, len(view), MiB):
            yield bytes(view[i:i + MiB])
        yield suffix

    upload(layer_digest, chunks(), layer_size)
    config = json.dumps({"architecture": "amd64", "os": "linux", "client": client,
                         "round": round_no}).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    upload(config_digest, config, len(config))
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest, "size": layer_size}],
    }).encode()
    status, _, body = request(conn, "PUT", f"/v2/{repo}/manifests/r{round_no}", manifest,
                              {"Content-Type": OCI_MANIFEST}, length=len(manifest))
    assert status == 201, (status, body)
    status, _, _ = request(conn, "GET", f"/v2/{repo}/manifests/r{round_no}", headers={
        "Accept": OCI_MANIFEST})
    assert status == 200, status
    conn.request("GET", f"/v2/{repo}/blobs/{layer_digest}")
    response = conn.getresponse()
    assert response.status == 200, response.status
    got = 0
    while True:
        chunk = response.read(MiB)
        if not chunk:
            break
        got += len(chunk)
    assert got == layer_size, (got, layer_size)
    conn.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stowage-bin", required=True)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--size-mib", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--env", action="append", default=[],
                        help="extra KEY=VALUE for the server (e.g. MALLOC_ARENA_MAX=2)")
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="stowage-mem-")
    port = free_port()
    env = dict(os.environ)
    env.update({
        "STOWAGE_HTTP_ADDR": f"{HOST}:{port}", "STOWAGE_DATA_DIR": os.path.join(work, "data"),
        "STOWAGE_AUTH__MODE": "none", "RUST_LOG": "warn",
        "STOWAGE_STORAGE__MAINTENANCE__UPLOADPURGING__ENABLED": "false",
    })
    for item in args.env:
        key, value = item.split("=", 1)
        env[key] = value
    log = open(os.path.join(work, "server.log"), "w")
    server = subprocess.Popen([args.stowage_bin, "serve"], env=env, stdout=log, stderr=log)
    try:
        deadline = time.time() + 60
        while True:
            try:
                conn = http.client.HTTPConnection(HOST, port, timeout=5)
                status, _, _ = request(conn, "GET", "/v2/")
                if status == 200:
                    break
            except OSError:
                pass
            assert time.time() < deadline and server.poll() is None, "server did not start"
            time.sleep(0.05)
        time.sleep(1)
        figures = {"clients": args.clients, "size_mib": args.size_mib, "rounds": args.rounds,
                   "env": args.env, "idle_start_mib": rss_kib(server.pid) / 1024}
        layer_base = os.urandom(args.size_mib * MiB - 16)
        base_hash = hashlib.sha256(layer_base)
        peak = [0]
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], rss_kib(server.pid))
                time.sleep(0.01)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.time()
        for round_no in range(args.rounds):
            with cf.ThreadPoolExecutor(args.clients) as pool:
                futures = [pool.submit(push_and_pull, port, c, round_no, layer_base, base_hash)
                           for c in range(args.clients)]
                for f in futures:
                    f.result()
        figures["burst_seconds"] = round(time.time() - started, 1)
        stop.set()
        sampler.join()
        figures["peak_mib"] = peak[0] / 1024
        for wait, label in [(1, "after_1s_mib"), (9, "after_10s_mib"), (20, "after_30s_mib")]:
            time.sleep(wait)
            figures[label] = rss_kib(server.pid) / 1024
        print(json.dumps({k: round(v, 1) if isinstance(v, float) else v
                          for k, v in figures.items()}))
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
