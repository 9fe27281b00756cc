#!/usr/bin/env python3
"""Stowage vs. CNCF distribution (Debian's `docker-registry`, 2.8): one command, one run.

    python3 bench/bench.py            # full benchmark (~15-20 min on 2 cores)
    python3 bench/bench.py --smoke    # tiny sizes, debug build, for CI (~15-30 s after the build)

Starts a release build of Stowage and Debian's docker-registry on loopback with equivalent
settings (filesystem storage, no auth, access logs off), plus the same Stowage with token auth
on (docker's token flow: 401 challenge, GET /jwt/auth, Bearer token cached per repository) to
show what auth costs; runs the same work against all three over raw HTTP (keep-alive
connections, Python stdlib only) and `wrk` for the manifest GET load (and, with auth, for the
token endpoint itself),
measures the machine's limits (`openssl speed -evp sha256`, `dd` write/read of the same 1 GiB
file on the same disk), and writes a Markdown table to stdout and bench/results/latest.md and
the raw figures to bench/results/latest.json. Every server gets a fresh data directory per
scenario, so peak RSS figures are per scenario; everything is removed at the end.

Only loopback addresses are contacted; every request loop is bounded in count and time.
Exit status is non-zero if any scenario failed (a figure that is unavailable because a time
cap was hit is reported as such and is not a failure).
"""

import argparse
import base64
import concurrent.futures as cf
import hashlib
import http.client
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse

import gc_bench
import proxy_bench
import scale_bench
import ui_bench

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
HOST = "127.0.0.1"
MB = 1_000_000
MiB = 1 << 20

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
ACCEPT = ", ".join([
    OCI_MANIFEST,
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
])

FULL = dict(
    big_layer=1 << 30, small_layers=200, small_min=16 << 10, small_max=256 << 10,
    small_workers=4, wrk_seconds=10, wrk_conc=[1, 16, 64], tag_counts=[10_000, 100_000],
    repos=10_000, seed_workers=16, page_reps=20, page_cap_s=30.0, token_conc=[1, 16],
    tags_seed_cap_s=600.0, repos_seed_cap_s=420.0, openssl_seconds=3,
)
SMOKE = dict(
    big_layer=8 << 20, small_layers=10, small_min=16 << 10, small_max=256 << 10,
    small_workers=4, wrk_seconds=1, wrk_conc=[1, 16, 64], tag_counts=[100, 200],
    repos=100, seed_workers=8, page_reps=3, page_cap_s=10.0, token_conc=[1, 16],
    tags_seed_cap_s=30.0, repos_seed_cap_s=30.0, openssl_seconds=1,
)

REGISTRIES = ["stowage", "stowage-auth", "distribution"]
LABELS = {"stowage": "Stowage", "stowage-auth": "Stowage + token auth", "distribution": "distribution"}

# Stowage with token auth: the instance admin `root` and a personal access token seeded at the
# first start (STOWAGE_ADMIN_TOKEN), used as the Basic password at /jwt/auth like `docker login`
# with a token would. Loopback only; the server and its data are thrown away after each scenario.
ADMIN_PASSWORD = "stowage-bench-root-password"
ADMIN_TOKEN = "stowage-bench-admin-token-0123456789"
TOKEN_LIFETIME = "2h"  # no token expires mid-run

# Image names fit Stowage's tenancy (`<project path>[/up to 3 more levels]`), for every registry:
# group `bench` with the projects `bench/images` (scenario repositories) and `bench/catalog`.
GROUP = "bench"
PROJECTS = ["images", "catalog"]
IMAGES = f"{GROUP}/images"
CATALOG = f"{GROUP}/catalog"


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


class Unavailable(Exception):
    """A figure could not be measured within its time cap (reported, not a failure)."""


# --------------------------------------------------------------------------------------------
# setup: packages, build, ports


def ensure_packages(names):
    """apt-get install the Debian packages whose command is missing (update only if needed)."""
    missing = [pkg for cmd, pkg in names if shutil.which(cmd) is None]
    if not missing:
        return
    log(f"installing Debian packages: {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    # Keep package scripts from starting the packaged service (docker-registry would take :5000).
    policy = "/usr/sbin/policy-rc.d"
    made_policy = False
    if os.geteuid() == 0 and not os.path.exists(policy):
        with open(policy, "w") as f:
            f.write("#!/bin/sh\nexit 101\n")
        os.chmod(policy, 0o755)
        made_policy = True
    try:
        cmd = sudo + ["apt-get", "install", "-y", "--no-install-recommends"] + missing
        if subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL).returncode != 0:
            subprocess.run(sudo + ["apt-get", "update"], env=env, stdout=subprocess.DEVNULL, check=True)
            subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, check=True)
    finally:
        if made_policy:
            os.unlink(policy)
    # The package may have started its own daemon despite policy-rc.d (not on :5000 ours).
    still = [pkg for cmd, pkg in names if shutil.which(cmd) is None]
    if still:
        raise BenchError(f"could not install {still}")


def build_stowage(profile):
    cmd = ["cargo", "build", "-p", "stowage"] + (["--release"] if profile == "release" else [])
    log(f"building: {' '.join(cmd)}")
    t = time.monotonic()
    subprocess.run(cmd, cwd=ROOT, check=True)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    path = os.path.join(target, "release" if profile == "release" else "debug", "stowage")
    if not os.path.exists(path):
        raise BenchError(f"built binary not found at {path}")
    return path, time.monotonic() - t


def remove_tree(path):
    """rm -rf (much faster than shutil.rmtree on distribution's 100k-tag directory trees)."""
    if subprocess.run(["rm", "-rf", "--", path]).returncode != 0:
        shutil.rmtree(path, ignore_errors=True)


def free_port():
    while True:
        with socket.socket() as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        if port != 5000:
            return port


# --------------------------------------------------------------------------------------------
# RSS sampling


def read_status(pid):
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    k, v = line.split(":", 1)
                    out[k] = int(v.split()[0]) * 1024
    except OSError:
        pass
    return out


class RssSampler(threading.Thread):
    """Samples VmRSS every 10 ms; a phase's peak is max(sampled peak, VmHWM since reset)."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self.stop_ev = threading.Event()
        self.lock = threading.Lock()

    def run(self):
        while not self.stop_ev.is_set():
            rss = read_status(self.pid).get("VmRSS", 0)
            with self.lock:
                self.peak = max(self.peak, rss)
            self.stop_ev.wait(0.01)

    def reset(self):
        try:  # "5" resets VmHWM to the current RSS (Linux >= 4.0)
            with open(f"/proc/{self.pid}/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass
        with self.lock:
            self.peak = read_status(self.pid).get("VmRSS", 0)

    def phase_peak(self):
        hwm = read_status(self.pid).get("VmHWM", 0)
        with self.lock:
            return max(self.peak, hwm)


# --------------------------------------------------------------------------------------------
# servers


class Server:
    def __init__(self, kind, workdir, stowage_bin):
        self.kind = kind
        self.workdir = workdir
        self.stowage_bin = stowage_bin
        self.proc = None
        self.sampler = None
        self.datadir = None
        self.auth = None  # TokenAuth for stowage-auth

    def client(self, timeout=120):
        return Client(self.port, timeout=timeout, auth=self.auth)

    def start(self):
        self.port = free_port()
        self.datadir = tempfile.mkdtemp(prefix=f"{self.kind}-", dir=self.workdir)
        self.logpath = self.datadir + ".log"
        env = {k: v for k, v in os.environ.items() if k != "RUST_LOG" and not k.startswith("STOWAGE_")}
        if self.kind in ("stowage", "stowage-auth"):
            env.update(
                STOWAGE_HTTP_ADDR=f"{HOST}:{self.port}",
                STOWAGE_DATA_DIR=self.datadir,
                STOWAGE_LOG__LEVEL="warn",
                STOWAGE_AUTH__MODE="none",
                STOWAGE_STORAGE__MAINTENANCE__UPLOADPURGING__ENABLED="false",
            )
            if self.kind == "stowage-auth":
                env.update(
                    STOWAGE_AUTH__MODE="token",
                    STOWAGE_ADMIN_PASSWORD=ADMIN_PASSWORD,
                    STOWAGE_ADMIN_TOKEN=ADMIN_TOKEN,
                    STOWAGE_AUTH__TOKEN_LIFETIME=TOKEN_LIFETIME,
                )
            cmd = [self.stowage_bin, "serve"]
        else:
            config = os.path.join(self.datadir + ".yml")
            with open(config, "w") as f:
                f.write(DISTRIBUTION_CONFIG.format(root=os.path.join(self.datadir, "storage"),
                                                   addr=f"{HOST}:{self.port}"))
            cmd = ["docker-registry", "serve", config]
        self.logf = open(self.logpath, "wb")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=self.datadir)
        deadline = time.monotonic() + 60
        ready = 401 if self.kind == "stowage-auth" else 200  # /v2/ asks for a token with auth on
        while True:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.kind} exited at start:\n{self.log_tail()}")
            try:
                c = http.client.HTTPConnection(HOST, self.port, timeout=2)
                c.request("GET", "/v2/")
                r = c.getresponse()
                r.read()
                c.close()
                if r.status == ready:
                    challenge = r.getheader("WWW-Authenticate")
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise BenchError(f"{self.kind} did not answer GET /v2/ within 60 s:\n{self.log_tail()}")
            time.sleep(0.05)
        if self.kind == "stowage-auth":
            self.auth = TokenAuth(self.port, challenge)
            self.setup_projects()
        self.sampler = RssSampler(self.proc.pid)
        self.sampler.start()
        return self

    def setup_projects(self):
        """Creates the group and projects the benchmark's images live in (REST, admin token)."""
        c = Client(self.port)
        h = {"PRIVATE-TOKEN": ADMIN_TOKEN, "Content-Type": "application/json"}
        try:
            _, body = c.request("POST", "/api/v4/groups", expect=201, headers=h, body=json.dumps(
                {"name": GROUP, "path": GROUP, "visibility": "private"}).encode())
            gid = json.loads(body)["id"]
            for p in PROJECTS:
                c.request("POST", "/api/v4/projects", expect=201, headers=h, body=json.dumps(
                    {"name": p, "path": p, "namespace_id": gid}).encode())
        finally:
            c.close()

    def log_tail(self, n=20):
        try:
            with open(self.logpath, "rb") as f:
                return b"\n".join(f.read().splitlines()[-n:]).decode(errors="replace")
        except OSError:
            return ""

    def stop(self):
        if self.sampler:
            self.sampler.stop_ev.set()
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.logf.close()
        if self.datadir:
            remove_tree(self.datadir)
            self.datadir = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


DISTRIBUTION_CONFIG = """\
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {root}
  cache:
    blobdescriptor: inmemory
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: {addr}
  headers:
    X-Content-Type-Options: [nosniff]
"""


# --------------------------------------------------------------------------------------------
# HTTP client helpers (keep-alive, one connection per thread)


def parse_challenge(value):
    """`Bearer realm="…",service="…",scope="…"` -> {"realm": …, "service": …, "scope": …}."""
    if not value or not value.lower().startswith("bearer "):
        raise BenchError(f"expected a Bearer challenge, got {value!r}")
    return dict(re.findall(r'(\w+)="([^"]*)"', value))


REPO_PATH = re.compile(r"^/v2/(.+?)/(?:blobs|manifests|tags)/")


class TokenAuth:
    """The docker client's token flow, shared by all connections to one server: a request on a
    repository goes out with the cached token for it; on a 401 with a Bearer challenge the client
    GETs `<realm>?service=&scope=` with Basic root:<admin token>, caches the token for that
    repository and retries. A cross-repository mount asks for one token with both scopes
    (`repository:<name>:pull,push` and `repository:<from>:pull`), as docker does."""

    def __init__(self, port, challenge):
        ch = parse_challenge(challenge)
        realm = urllib.parse.urlsplit(ch["realm"])
        if realm.hostname not in (HOST, "localhost") or (realm.port or 80) != port:
            raise BenchError(f"token realm {ch['realm']!r} is not this loopback server")
        self.realm_path = realm.path
        self.service = ch.get("service", "")
        self.basic = "Basic " + base64.b64encode(f"root:{ADMIN_TOKEN}".encode()).decode()
        self.lock = threading.Lock()
        self.cache = {}  # repository name, (name, mount source) or "catalog" -> token
        self.key_locks = {}  # one token flow at a time per key (parallel pushers share a token)
        self.challenges = 0
        self.fetches = 0
        self.fetch_s = 0.0

    def token_path(self, scopes):
        q = [("service", self.service)] + [("scope", sc) for sc in scopes]
        return self.realm_path + "?" + urllib.parse.urlencode(q)

    @staticmethod
    def keys(method, path):
        """Cache keys for a request: (lookup key, extra keys the fetched token also serves)
        and the extra scope a mount needs."""
        if path.startswith("/v2/_catalog"):
            return "catalog", [], None
        m = REPO_PATH.match(path)
        if not m:
            return None, [], None
        name = m.group(1)
        if method == "POST" and "mount=" in path:
            src = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query).get("from", [None])[0]
            if src:
                return (name, src), [name], f"repository:{src}:pull"
        return name, [], None

    def cached(self, key):
        with self.lock:
            return self.cache.get(key)

    def key_lock(self, key):
        with self.lock:
            return self.key_locks.setdefault(key, threading.Lock())

    def token_after_401(self, client, challenge, key, also, extra_scope, sent):
        """The token to retry with: one another connection just fetched for the same key, or a
        new one (so 4 connections pushing layers to one repository share one token flow)."""
        with self.key_lock(key):
            token = self.cached(key) if key is not None else None
            if token and token != sent:
                return token
            return self.fetch(client, challenge, key, also, extra_scope)

    def fetch(self, client, challenge, key, also, extra_scope):
        ch = parse_challenge(challenge)
        scopes = [ch["scope"]] if ch.get("scope") else []
        if extra_scope:
            scopes.append(extra_scope)
        t = time.monotonic()
        _, body = client.request("GET", self.token_path(scopes), headers={"Authorization": self.basic},
                                 expect=200, authenticate=False)
        el = time.monotonic() - t
        token = json.loads(body).get("token")
        if not token:
            raise BenchError(f"no token in the /jwt/auth answer: {body[:200]!r}")
        with self.lock:
            self.fetches += 1
            self.fetch_s += el
            if key is not None:
                self.cache[key] = token
                for k in also:
                    self.cache[k] = token
        return token

    def forget(self):
        """Drops cached tokens: the next operation starts its own token flow, like a new
        `docker pull` after a `docker push`."""
        with self.lock:
            self.cache.clear()

    def stats(self):
        with self.lock:
            return {"challenges_401": self.challenges, "token_fetches": self.fetches,
                    "token_fetch_ms_mean": 1000 * self.fetch_s / self.fetches if self.fetches else None}


class Client:
    def __init__(self, port, timeout=120, auth=None):
        self.port = port
        self.auth = auth
        self.conn = http.client.HTTPConnection(HOST, port, timeout=timeout, blocksize=MiB)

    def send(self, method, path, body, h):
        try:
            self.conn.request(method, path, body=body, headers=h)
            return self.conn.getresponse()
        except (http.client.HTTPException, OSError):
            self.conn.close()  # retry once on a fresh connection (the server may have closed it)
            if hasattr(body, "seek"):
                body.seek(0)
            self.conn.request(method, path, body=body, headers=h)
            return self.conn.getresponse()

    def request(self, method, path, body=None, headers=None, expect=None, read=True, authenticate=True):
        h = {"Host": f"{HOST}:{self.port}"}
        if headers:
            h.update(headers)
        if body is None and method in ("PUT", "POST", "PATCH"):
            h.setdefault("Content-Length", "0")
        auth = self.auth if authenticate and path.startswith("/v2/") else None
        key = also = extra = token = None
        if auth:
            key, also, extra = auth.keys(method, path)
            token = auth.cached(key) if key is not None else None
            if token:
                h["Authorization"] = f"Bearer {token}"
        r = self.send(method, path, body, h)
        if auth and r.status == 401:
            r.read()
            challenge = r.getheader("WWW-Authenticate")
            with auth.lock:
                auth.challenges += 1
            h["Authorization"] = "Bearer " + auth.token_after_401(self, challenge, key, also, extra, token)
            if hasattr(body, "seek"):
                body.seek(0)
            r = self.send(method, path, body, h)
        data = r.read() if read else None
        if expect is not None and r.status not in ((expect,) if isinstance(expect, int) else expect):
            raise BenchError(f"{method} {path} -> {r.status} (expected {expect}): "
                             f"{(data or b'')[:300]!r}")
        return r, data

    def close(self):
        self.conn.close()


def rel(location):
    """An upload Location (absolute or relative) as path?query."""
    u = urllib.parse.urlsplit(location)
    return u.path + ("?" + u.query if u.query else "")


def with_query(path, **params):
    return path + ("&" if "?" in path else "?") + urllib.parse.urlencode(params)


def push_blob(c, repo, body, digest, size):
    """POST a session, then PUT the whole blob with ?digest= (monolithic, as docker does)."""
    r, _ = c.request("POST", f"/v2/{repo}/blobs/uploads/", expect=202)
    loc = r.getheader("Location")
    if not loc:
        raise BenchError("upload session without Location")
    c.request("PUT", with_query(rel(loc), digest=digest), body=body, expect=201,
              headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"})


def mount_blob(c, repo, digest, src):
    c.request("POST", f"/v2/{repo}/blobs/uploads/?" + urllib.parse.urlencode({"mount": digest, "from": src}),
              expect=201)


def sha(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def make_manifest(config, layers):
    cfg_desc = {"mediaType": OCI_CONFIG, "digest": sha(config), "size": len(config)}
    body = {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": cfg_desc,
        "layers": [{"mediaType": OCI_LAYER, "digest": d, "size": s} for d, s in layers],
    }
    return json.dumps(body, separators=(",", ":")).encode()


def make_config(diff_ids):
    return json.dumps({"architecture": "amd64", "os": "linux",
                       "rootfs": {"type": "layers", "diff_ids": diff_ids},
                       "config": {}}, separators=(",", ":")).encode()


def put_manifest(c, repo, ref, manifest):
    c.request("PUT", f"/v2/{repo}/manifests/{ref}", body=manifest, expect=201,
              headers={"Content-Type": OCI_MANIFEST, "Content-Length": str(len(manifest))})


def tiny_image(c, repo):
    """Pushes one small layer + config to `repo`; returns the manifest bytes referencing them."""
    layer = b"stowage-bench-layer\n" * 64
    config = make_config([sha(layer)])
    push_blob(c, repo, layer, sha(layer), len(layer))
    push_blob(c, repo, config, sha(config), len(config))
    return make_manifest(config, [(sha(layer), len(layer))]), [sha(layer), sha(config)]


def pct(values, p):
    v = sorted(values)
    if not v:
        return None
    k = (len(v) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def run_parallel(n_workers, srv, items, fn, deadline=None):
    """Runs fn(client, item) over items with n_workers keep-alive connections.
    Returns the number of items done; stops early (without error) at the deadline."""
    lock = threading.Lock()
    it = iter(items)
    done = [0]
    stop = threading.Event()

    def worker():
        c = srv.client()
        try:
            while not stop.is_set():
                if deadline is not None and time.monotonic() > deadline:
                    return
                with lock:
                    item = next(it, None)
                if item is None:
                    return
                fn(c, item)
                with lock:
                    done[0] += 1
        except BaseException:
            stop.set()
            raise
        finally:
            c.close()

    with cf.ThreadPoolExecutor(n_workers) as ex:
        futures = [ex.submit(worker) for _ in range(n_workers)]
        for f in futures:
            f.result()
    return done[0]


# --------------------------------------------------------------------------------------------
# reference limits


def measure_limits(cfg, workdir, layer_path):
    out = {}
    log("limit: openssl speed -evp sha256")
    p = subprocess.run(["openssl", "speed", "-evp", "sha256", "-bytes", "16384",
                        "-seconds", str(cfg["openssl_seconds"])],
                       capture_output=True, text=True, check=True, timeout=120)
    m = re.search(r"^sha256\s+([\d.]+)k", p.stdout, re.M | re.I)
    if not m:
        raise BenchError(f"cannot parse openssl output: {p.stdout[-500:]}")
    out["sha256_MBps"] = float(m.group(1)) * 1000 / MB
    out["sha256_block_bytes"] = 16384

    size = os.path.getsize(layer_path)
    target = os.path.join(workdir, "dd.bin")
    log(f"limit: dd write+read of {size >> 20} MiB on the same disk")
    t = time.monotonic()
    subprocess.run(["dd", f"if={layer_path}", f"of={target}", "bs=1M", "conv=fdatasync"],
                   check=True, capture_output=True, timeout=600)
    out["disk_write_MBps"] = size / MB / (time.monotonic() - t)
    os.unlink(target)
    # The same write without fdatasync (neither registry syncs blobs to disk before answering).
    t = time.monotonic()
    subprocess.run(["dd", f"if={layer_path}", f"of={target}", "bs=1M"], check=True, capture_output=True, timeout=600)
    out["disk_write_buffered_MBps"] = size / MB / (time.monotonic() - t)
    os.sync()
    dropped = False
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3")
        dropped = True
    except OSError:
        pass
    t = time.monotonic()
    subprocess.run(["dd", f"if={target}", "of=/dev/null", "bs=1M"], check=True, capture_output=True, timeout=600)
    read_s = time.monotonic() - t
    if dropped:
        out["disk_read_cold_MBps"] = size / MB / read_s
        t = time.monotonic()
        subprocess.run(["dd", f"if={target}", "of=/dev/null", "bs=1M"], check=True, capture_output=True, timeout=600)
        read_s = time.monotonic() - t
    out["disk_read_cached_MBps"] = size / MB / read_s
    out["caches_dropped"] = dropped
    out["disk_bytes"] = size
    os.unlink(target)
    return out


# --------------------------------------------------------------------------------------------
# scenarios; each takes a started Server and returns a dict of figures


def sc_big_layer(srv, cfg, ctx):
    path, digest, size = ctx["layer_path"], ctx["layer_digest"], ctx["layer_size"]
    repo = f"{IMAGES}/big"
    c = srv.client(timeout=600)
    res = {}
    srv.sampler.reset()
    t = time.monotonic()
    with open(path, "rb") as f:
        push_blob(c, repo, f, digest, size)
    res["push_s"] = time.monotonic() - t
    res["push_MBps"] = size / MB / res["push_s"]
    res["push_peak_rss"] = srv.sampler.phase_peak()

    buf = bytearray(MiB)
    mv = memoryview(buf)
    if srv.auth:
        srv.auth.forget()
    srv.sampler.reset()
    t = time.monotonic()
    r, _ = c.request("GET", f"/v2/{repo}/blobs/{digest}", read=False)
    if r.status != 200:
        raise BenchError(f"blob GET -> {r.status}: {r.read()[:300]!r}")
    h = hashlib.sha256() if ctx["verify_big"] else None
    got = 0
    while True:
        n = r.readinto(mv)
        if not n:
            break
        if h:
            h.update(mv[:n])
        got += n
    res["pull_s"] = time.monotonic() - t
    res["pull_MBps"] = size / MB / res["pull_s"]
    res["pull_peak_rss"] = srv.sampler.phase_peak()
    c.close()
    if got != size:
        raise BenchError(f"pulled {got} bytes, expected {size}")
    if h and "sha256:" + h.hexdigest() != digest:
        raise BenchError("pulled blob has the wrong digest")
    res["pull_page_cache"] = "warm (blob just written)"
    return res


def sc_small_layers(srv, cfg, ctx):
    blobs = ctx["small_blobs"]  # list of (digest, bytes)
    config = make_config([d for d, _ in blobs])
    manifest = make_manifest(config, [(d, len(b)) for d, b in blobs])
    repo = f"{IMAGES}/small"
    res = {}
    srv.sampler.reset()
    t = time.monotonic()
    run_parallel(cfg["small_workers"], srv, blobs,
                 lambda c, it: push_blob(c, repo, it[1], it[0], len(it[1])))
    c = srv.client()
    push_blob(c, repo, config, sha(config), len(config))
    put_manifest(c, repo, "v1", manifest)
    res["push_s"] = time.monotonic() - t
    res["push_layers_per_s"] = len(blobs) / res["push_s"]
    res["push_peak_rss"] = srv.sampler.phase_peak()

    if srv.auth:
        srv.auth.forget()
    srv.sampler.reset()
    t = time.monotonic()
    _, body = c.request("GET", f"/v2/{repo}/manifests/v1", headers={"Accept": ACCEPT}, expect=200)
    layers = json.loads(body)["layers"]
    if len(layers) != len(blobs):
        raise BenchError("pulled manifest has the wrong number of layers")

    def get(cl, desc):
        _, data = cl.request("GET", f"/v2/{repo}/blobs/{desc['digest']}", expect=200)
        if len(data) != desc["size"] or sha(data) != desc["digest"]:
            raise BenchError(f"blob {desc['digest']} came back wrong")

    run_parallel(cfg["small_workers"], srv, layers, get)
    res["pull_s"] = time.monotonic() - t
    res["pull_layers_per_s"] = len(blobs) / res["pull_s"]
    res["pull_peak_rss"] = srv.sampler.phase_peak()
    res["workers"] = cfg["small_workers"]
    c.close()
    return res


def parse_latency(s):
    m = re.match(r"([\d.]+)(us|ms|s)$", s)
    v = float(m.group(1))
    return v / 1000 if m.group(2) == "us" else v if m.group(2) == "ms" else v * 1000


def run_wrk(port, path, conc, seconds, headers=()):
    url = f"http://{HOST}:{port}{path}"
    threads = max(1, min(conc, 2))
    cmd = ["wrk", f"-t{threads}", f"-c{conc}", f"-d{seconds}s", "--latency", "--timeout", "5s",
           "-H", f"Accept: {ACCEPT}"]
    for h in headers:
        cmd += ["-H", h]
    cmd.append(url)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    out = p.stdout
    if p.returncode != 0:
        raise BenchError(f"wrk failed: {p.stderr}{out}")
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    total = re.search(r"(\d+) requests in", out)
    if not (rps and p50 and p99 and total):
        raise BenchError(f"cannot parse wrk output:\n{out}")
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    res = {
        "concurrency": conc, "threads": threads, "seconds": seconds,
        "requests": int(total.group(1)), "rps": float(rps.group(1)),
        "p50_ms": parse_latency(p50.group(1)), "p99_ms": parse_latency(p99.group(1)),
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": dict(zip(["connect", "read", "write", "timeout"],
                                  map(int, errs.groups()))) if errs else {},
    }
    if res["non2xx"] or res["socket_errors"].get("connect") or res["socket_errors"].get("timeout"):
        raise BenchError(f"wrk saw errors at c={conc}: {res}\n{out}")
    return res


def sc_manifest_get(srv, cfg, ctx):
    repo = f"{IMAGES}/manifest"
    c = srv.client()
    manifest, _ = tiny_image(c, repo)
    put_manifest(c, repo, "latest", manifest)
    path = f"/v2/{repo}/manifests/latest"
    for _ in range(20):  # warm-up, and check the body
        _, body = c.request("GET", path, headers={"Accept": ACCEPT}, expect=200)
        if body != manifest:
            raise BenchError("manifest GET returned other bytes than were pushed")
    headers = []
    if srv.auth:  # wrk sends the pull token the warm-up got (as a docker client reuses its token)
        headers.append(f"Authorization: Bearer {srv.auth.cached(repo)}")
    c.close()
    res = {}
    srv.sampler.reset()
    for conc in cfg["wrk_conc"]:
        res[f"c{conc}"] = run_wrk(srv.port, path, conc, cfg["wrk_seconds"], headers)
        log(f"  {srv.kind} manifest GET c={conc}: {res[f'c{conc}']['rps']:.0f} req/s, "
            f"p50 {res[f'c{conc}']['p50_ms']:.2f} ms, p99 {res[f'c{conc}']['p99_ms']:.2f} ms")
    res["peak_rss"] = srv.sampler.phase_peak()
    if srv.auth:
        # What a token costs: GET /jwt/auth with Basic root:<personal access token> for one
        # pull scope (the request a docker client makes once per repository and operation).
        tpath = srv.auth.token_path([f"repository:{repo}:pull"])
        c = srv.client()
        _, body = c.request("GET", tpath, headers={"Authorization": srv.auth.basic}, expect=200)
        c.close()
        if not json.loads(body).get("token"):
            raise BenchError("GET /jwt/auth answered without a token")
        res["token"] = {}
        srv.sampler.reset()
        for conc in cfg["token_conc"]:
            res["token"][f"c{conc}"] = run_wrk(srv.port, tpath, conc, cfg["wrk_seconds"],
                                               [f"Authorization: {srv.auth.basic}"])
            t = res["token"][f"c{conc}"]
            log(f"  {srv.kind} token GET /jwt/auth c={conc}: {t['rps']:.0f} req/s, "
                f"p50 {t['p50_ms']:.2f} ms, p99 {t['p99_ms']:.2f} ms")
        res["token"]["peak_rss"] = srv.sampler.phase_peak()
    return res


def time_pages(srv, path_for, positions, reps, cap_s, check):
    """GETs each position's page `reps` times on one keep-alive connection (bounded by cap_s
    per position, at least one request); returns {position: {p50_ms, max_ms, n, items}}."""
    c = srv.client(timeout=max(cap_s, 60))
    out = {}
    for pos, last in positions:
        path = path_for(last)
        lat = []
        items = None
        link = None
        deadline = time.monotonic() + cap_s
        while len(lat) < reps and (not lat or time.monotonic() < deadline):
            t = time.monotonic()
            r, body = c.request("GET", path, expect=200)
            lat.append((time.monotonic() - t) * 1000)
            items = check(json.loads(body), pos, last)
            link = r.getheader("Link")
        out[pos] = {"p50_ms": statistics.median(lat), "max_ms": max(lat), "n": len(lat),
                    "items_returned": items, "link": link, "last": last}
    c.close()
    return out


def tag_name(i):
    return f"t{i:06d}"


def sc_tags(srv, cfg, ctx):
    repo = f"{IMAGES}/tags"
    c = srv.client()
    manifest, _ = tiny_image(c, repo)
    c.close()
    res = {"seed": {}}
    seeded = 0
    seed_deadline = time.monotonic() + cfg["tags_seed_cap_s"]
    for count in cfg["tag_counts"]:
        key = f"{count}"
        srv.sampler.reset()
        t = time.monotonic()
        done = run_parallel(cfg["seed_workers"], srv, range(seeded, count),
                            lambda cl, i: put_manifest(cl, repo, tag_name(i), manifest),
                            deadline=seed_deadline)
        el = time.monotonic() - t
        seeded += done
        res["seed"][key] = {"tags_put": done, "seconds": el, "put_per_s": done / el if el else None,
                            "peak_rss": srv.sampler.phase_peak()}
        log(f"  {srv.kind} seeded {seeded} tags ({done / el if el else 0:.0f} PUT/s)")
        if seeded < count:
            res[key] = {"unavailable": f"seeding capped at {cfg['tags_seed_cap_s']:.0f} s "
                                       f"with {seeded} of {count} tags"}
            break
        positions = [("first", None), ("middle", tag_name(count // 2 - 1)), ("last", tag_name(count - 101))]

        order_ok = {}

        def check(body, pos, last, count=count):
            tags = body.get("tags") or []
            if len(tags) == count and count > 100:  # no pagination: the whole list every time
                order_ok[pos] = tags == sorted(tags)
                return len(tags)
            if not 0 < len(tags) <= 100 or not all(re.fullmatch(r"t\d{6}", t) for t in tags):
                raise BenchError(f"{pos} tags page: got {len(tags)} tags starting {tags[:2]}")
            # The spec asks for lexical order, starting after `last`; note (not fail) if not.
            want = [tag_name(i) for i in range(0 if last is None else int(last[1:]) + 1, count)][:100]
            order_ok[pos] = tags == want
            return len(tags)

        srv.sampler.reset()
        res[key] = time_pages(
            srv,
            lambda last: f"/v2/{repo}/tags/list?n=100" + (f"&last={last}" if last else ""),
            positions, cfg["page_reps"], cfg["page_cap_s"], check)
        res[key]["peak_rss"] = srv.sampler.phase_peak()
        res[key]["paginates"] = res[key]["first"]["items_returned"] == 100
        res[key]["lexical_order"] = all(order_ok.values())
        log(f"  {srv.kind} tags {count}: " + ", ".join(
            f"{p} {res[key][p]['p50_ms']:.2f} ms ({res[key][p]['items_returned']} tags)"
            for p, _ in positions))
    return res


def sc_catalog(srv, cfg, ctx):
    base = f"{CATALOG}/base"
    c = srv.client()
    manifest, digests = tiny_image(c, base)
    put_manifest(c, base, "v1", manifest)
    c.close()
    names = [f"{CATALOG}/r{i:05d}" for i in range(cfg["repos"])]

    def seed(cl, name):
        for d in digests:
            mount_blob(cl, name, d, base)
        put_manifest(cl, name, "v1", manifest)

    srv.sampler.reset()
    t = time.monotonic()
    done = run_parallel(cfg["seed_workers"], srv, names, seed,
                        deadline=time.monotonic() + cfg["repos_seed_cap_s"])
    el = time.monotonic() - t
    res = {"seed": {"repos": done, "seconds": el, "repos_per_s": done / el if el else None,
                    "peak_rss": srv.sampler.phase_peak()}}
    log(f"  {srv.kind} seeded {done} repositories ({done / el if el else 0:.0f}/s)")
    if done < len(names):
        res["unavailable"] = f"seeding capped at {cfg['repos_seed_cap_s']:.0f} s with {done} of {len(names)} repositories"
        return res
    all_names = sorted(names + [base])
    last = all_names[-101]

    def check(body, pos, last_):
        repos = body.get("repositories") or []
        want = all_names[:100] if last_ is None else all_names[-100:]
        if repos != want:
            raise BenchError(f"catalog {pos} page: got {len(repos)} names starting {repos[:2]}")
        return len(repos)

    srv.sampler.reset()
    pages = time_pages(srv, lambda l: "/v2/_catalog?n=100" + (f"&last={urllib.parse.quote(l, safe='')}" if l else ""),
                       [("first", None), ("last", last)], cfg["page_reps"], cfg["page_cap_s"], check)
    res.update(pages)
    res["peak_rss"] = srv.sampler.phase_peak()
    if not pages["first"]["link"]:
        raise BenchError("catalog first page has no Link header")
    log(f"  {srv.kind} catalog: first {pages['first']['p50_ms']:.2f} ms, last {pages['last']['p50_ms']:.2f} ms")
    return res


SCENARIOS = [
    ("big_layer", sc_big_layer),
    ("small_layers", sc_small_layers),
    ("manifest_get", sc_manifest_get),
    ("tags", sc_tags),
    ("catalog", sc_catalog),
]


# --------------------------------------------------------------------------------------------
# report


def fmt(v, unit="", digits=None):
    if v is None:
        return "n/a"
    if digits is None:
        digits = 0 if abs(v) >= 100 else 1 if abs(v) >= 10 else 2
    return f"{v:,.{digits}f}{unit}"


def get(d, *keys):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def render(results, cfg, smoke):
    S, A, D = results["stowage"], results["stowage-auth"], results["distribution"]
    L = results.get("limits", {})
    rows = []

    def unavailable(reg, *keys):
        for i in range(len(keys), 0, -1):
            u = get(reg, *keys[:i], "unavailable")
            if u:
                return u
        return None

    def cell(reg, keys, unit, digits, scale):
        v = get(reg, *keys)
        if v is None:
            u = unavailable(reg, *keys)
            return f"unavailable ({u})" if u else "n/a"
        return fmt(v * scale, unit, digits)

    def row(name, keys, unit, higher_better=True, limit="", digits=None, scale=1.0):
        s, a, d = get(S, *keys), get(A, *keys), get(D, *keys)
        auth = cell(A, keys, unit, digits, scale)
        if s and a:  # what auth costs: change against Stowage without auth
            auth += f" ({100 * (a - s) / s:+.0f}%)"
        ratio = "n/a"
        if s and d:
            r = s / d if higher_better else d / s
            ratio = f"{r:.2f}x"
        rows.append(f"| {name} | {cell(S, keys, unit, digits, scale)} | {auth} | "
                    f"{cell(D, keys, unit, digits, scale)} | {ratio} | {limit} |")

    def auth_row(name, keys, digits=None, scale=1.0):
        """A figure only Stowage with auth has (the token endpoint)."""
        rows.append(f"| {name} | - | {cell(A, keys, '', digits, scale)} | - | - |  |")

    mib = 1 / MiB
    big = cfg["big_layer"]
    hash_l, dw = L.get("sha256_MBps"), L.get("disk_write_MBps")
    push_limit = min(hash_l, dw) if hash_l and dw else None
    s_push = get(S, "big_layer", "push_MBps")
    lim = ""
    if push_limit:
        lim = f"min(sha256 {fmt(hash_l)}, disk write+fdatasync {fmt(dw)}) = {fmt(push_limit)} MB/s"
        if s_push:
            lim += f"; Stowage at {100 * s_push / push_limit:.0f}%"
        if L.get("disk_write_buffered_MBps"):
            bl = min(hash_l, L["disk_write_buffered_MBps"])
            lim += f" (without fdatasync: min(sha256, {fmt(L['disk_write_buffered_MBps'])}) = {fmt(bl)} MB/s"
            lim += f"; Stowage at {100 * s_push / bl:.0f}%)" if s_push else ")"
    size_label = f"{big >> 30} GiB" if big >= 1 << 30 else f"{big >> 20} MiB"
    row(f"push {size_label} layer (MB/s)", ("big_layer", "push_MBps"), "", limit=lim)
    rlim = []
    if L.get("disk_read_cold_MBps"):
        rlim.append(f"disk read cold {fmt(L['disk_read_cold_MBps'])}")
    if L.get("disk_read_cached_MBps"):
        rlim.append(f"page-cache read {fmt(L['disk_read_cached_MBps'])} MB/s")
    row(f"pull {size_label} layer (MB/s, page cache warm)", ("big_layer", "pull_MBps"), "", limit=", ".join(rlim))
    row(f"peak RSS during push {size_label} (MiB)", ("big_layer", "push_peak_rss"), "", False, scale=mib)
    row(f"peak RSS during pull {size_label} (MiB)", ("big_layer", "pull_peak_rss"), "", False, scale=mib)
    n = cfg["small_layers"]
    w = cfg["small_workers"]
    row(f"push {n} small layers, {w} connections (layers/s)", ("small_layers", "push_layers_per_s"), "")
    row(f"pull {n} small layers, {w} connections (layers/s)", ("small_layers", "pull_layers_per_s"), "")
    row("peak RSS during small-layer push (MiB)", ("small_layers", "push_peak_rss"), "", False, scale=mib)
    row("peak RSS during small-layer pull (MiB)", ("small_layers", "pull_peak_rss"), "", False, scale=mib)
    for conc in cfg["wrk_conc"]:
        k = f"c{conc}"
        row(f"manifest GET by tag c={conc} (req/s)", ("manifest_get", k, "rps"), "")
        row(f"manifest GET by tag c={conc} p50 (ms)", ("manifest_get", k, "p50_ms"), "", False, digits=2)
        row(f"manifest GET by tag c={conc} p99 (ms)", ("manifest_get", k, "p99_ms"), "", False, digits=2)
    row("peak RSS during manifest GET load (MiB)", ("manifest_get", "peak_rss"), "", False, scale=mib)
    for conc in cfg.get("token_conc", []):
        k = f"c{conc}"
        auth_row(f"token request (GET /jwt/auth, Basic PAT, one scope) c={conc} (req/s)",
                 ("manifest_get", "token", k, "rps"))
        auth_row(f"token request c={conc} p50 (ms)", ("manifest_get", "token", k, "p50_ms"), digits=2)
        auth_row(f"token request c={conc} p99 (ms)", ("manifest_get", "token", k, "p99_ms"), digits=2)
    auth_row("peak RSS during token requests (MiB)", ("manifest_get", "token", "peak_rss"), scale=mib)
    for count in cfg["tag_counts"]:
        k = str(count)
        row(f"seed {count:,} tags: manifest PUT by tag (PUT/s, {cfg['seed_workers']} connections)",
            ("tags", "seed", k, "put_per_s"), "")
        for pos in ("first", "middle", "last"):
            row(f"tags list n=100, {count:,} tags, {pos} page p50 (ms)", ("tags", k, pos, "p50_ms"), "", False, digits=2)
        row(f"peak RSS during tags list, {count:,} tags (MiB)", ("tags", k, "peak_rss"), "", False, scale=mib)
    row(f"seed {cfg['repos']:,} repositories (repos/s)", ("catalog", "seed", "repos_per_s"), "")
    for pos in ("first", "last"):
        row(f"catalog n=100, {cfg['repos']:,} repos, {pos} page p50 (ms)", ("catalog", pos, "p50_ms"), "", False, digits=2)
    row(f"peak RSS during catalog, {cfg['repos']:,} repos (MiB)", ("catalog", "peak_rss"), "", False, scale=mib)

    notes = []
    for count in cfg["tag_counts"]:
        for reg_name, reg in (("distribution", D), ("Stowage", S), ("Stowage + token auth", A)):
            p = get(reg, "tags", str(count), "paginates")
            if p is False:
                got = get(reg, "tags", str(count), "first", "items_returned")
                notes.append(f"{reg_name} ignores `n` on the tags list: each request returned all {got:,} tags.")
            if get(reg, "tags", str(count), "lexical_order") is False:
                notes.append(f"{reg_name} returned tag pages of {count:,} tags out of lexical order "
                             "(the spec asks for lexical order after `last`).")
    m = results["meta"]
    head = [
        f"# Stowage vs. CNCF distribution ({'smoke run, tiny sizes' if smoke else 'full run'})",
        "",
        f"{m['date']} on {m['machine']}; Stowage {m['stowage_rev']} ({m['stowage_profile']} build), "
        f"{m['distribution_version']}. All on loopback, filesystem storage, access logs off; "
        f"Stowage and distribution without auth, \"Stowage + token auth\" with docker's token flow "
        f"(below); a fresh server and data directory for each scenario. MB = 10^6 bytes. "
        f"ratio = how many times better Stowage (no auth) is than distribution (throughput S/d, latency "
        f"and RSS d/S; >1 = Stowage better); (+x%) in the auth column = change against Stowage without auth. "
        f"Client and servers share the machine's {m['cpus']} cores.",
        "",
        "| scenario | Stowage | Stowage + token auth | distribution | ratio | limit |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    tail = [""] + [f"- {n}" for n in notes]
    if L:
        tail.append(f"- Limits: `openssl speed -evp sha256` at {L['sha256_block_bytes']}-byte blocks = "
                    f"{fmt(L['sha256_MBps'])} MB/s; `dd bs=1M conv=fdatasync` write of the same {L['disk_bytes'] >> 20} MiB file = "
                    f"{fmt(L['disk_write_MBps'])} MB/s (without fdatasync {fmt(L.get('disk_write_buffered_MBps'))} MB/s); read " +
                    (f"cold (caches dropped) {fmt(L.get('disk_read_cold_MBps'))} MB/s, " if L.get("caches_dropped") else "(caches could not be dropped) ") +
                    f"from page cache {fmt(L['disk_read_cached_MBps'])} MB/s.")
    fetches = {name: get(A, name, "auth", "token_fetches") for name, _ in SCENARIOS}
    tail.append(
        "- Stowage + token auth: `auth.mode=token`, the client behaves like docker: a request without "
        "a token gets 401 with a Bearer challenge, the client GETs /jwt/auth with Basic "
        "root:<personal access token> for the challenged scope (a mount asks for both repositories' "
        "scopes in one token), caches the token per repository and retries; pulls start with a fresh "
        "token flow after the push; wrk sends a token fetched beforehand. Images live in the project "
        f"`{IMAGES}` (`{CATALOG}` for the catalog) for all three. Token fetches per scenario: " +
        ", ".join(f"{n} {v:,}" for n, v in fetches.items() if v is not None) + ".")
    tail.append(f"- Pull = GET manifest + each blob; push = POST + PUT ?digest= per blob, then config and manifest. "
                f"manifest GET load: `wrk --latency`, {cfg['wrk_seconds']} s per concurrency, Accept for OCI and Docker manifests.")
    if results["errors"]:
        tail.append("")
        tail.append("## Failures")
        tail += [f"- {e}" for e in results["errors"]]
    return "\n".join(head + rows + tail) + "\n"


# --------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes and short runs (CI)")
    ap.add_argument("--stowage-bin", help="use this stowage binary instead of building one")
    ap.add_argument("--profile", choices=["release", "debug"],
                    help="cargo profile to build (default: release; debug with --smoke, which "
                         "reuses the debug binary scripts/test builds)")
    ap.add_argument("--only", help="comma-separated scenarios: " + ",".join(
        [n for n, _ in SCENARIOS] + gc_bench.GC_SCENARIOS + scale_bench.SCALE_SCENARIOS
        + ui_bench.UI_SCENARIOS + proxy_bench.PROXY_SCENARIOS))
    ap.add_argument("--no-limits", action="store_true", help="skip openssl/dd reference limits")
    ap.add_argument("--registries", default=",".join(REGISTRIES),
                    help="comma-separated subset of " + ",".join(REGISTRIES) + " (for debugging the tool)")
    ap.add_argument("--out", default=os.path.join(HERE, "results"), help="results directory")
    ap.add_argument("--workdir", help="parent of the temporary directory (default: system temp)")
    args = ap.parse_args()
    cfg = dict(SMOKE if args.smoke else FULL)
    unknown = set(args.registries.split(",")) - set(REGISTRIES)
    if unknown:
        ap.error(f"unknown registries: {','.join(sorted(unknown))}")
    if args.profile is None:
        args.profile = "debug" if args.smoke else "release"
    started = time.monotonic()

    ensure_packages([("docker-registry", "docker-registry"), ("wrk", "wrk"), ("openssl", "openssl")])
    build_s = None
    if args.stowage_bin:
        stowage_bin = os.path.abspath(args.stowage_bin)
    elif not {"stowage", "stowage-auth"} & set(args.registries.split(",")):
        stowage_bin = None
    else:
        stowage_bin, build_s = build_stowage(args.profile)
    run_started = time.monotonic()

    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True).stdout.strip() or "unknown"
        if subprocess.run(["git", "status", "--porcelain", "--", "crates"], cwd=ROOT,
                          capture_output=True, text=True).stdout.strip():
            rev += "+dirty"
    except OSError:
        rev = "unknown"
    dver = subprocess.run(["docker-registry", "--version"], capture_output=True, text=True).stdout.strip()
    cpu = "unknown cpu"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), cpu)
    except OSError:
        pass
    results = {
        "meta": {
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "mode": "smoke" if args.smoke else "full",
            "machine": f"{platform.node()} ({cpu}, {os.cpu_count()} cpus, Linux {platform.release()})",
            "cpus": os.cpu_count(), "stowage_rev": rev, "stowage_bin": stowage_bin,
            "stowage_profile": "given binary" if args.stowage_bin else args.profile,
            "distribution_version": dver, "config": cfg, "build_seconds": build_s,
        },
        "stowage": {}, "stowage-auth": {}, "distribution": {}, "limits": {}, "errors": [],
    }

    only = set(args.only.split(",")) if args.only else None
    workdir = tempfile.mkdtemp(prefix="stowage-bench-", dir=args.workdir)
    servers = []
    try:
        # inputs, generated once and used for both registries
        ctx = {"verify_big": args.smoke}
        rnd = random.Random(42)
        if not only or "big_layer" in only or not args.no_limits:
            layer_path = os.path.join(workdir, "layer.bin")
            log(f"generating a {cfg['big_layer'] >> 20} MiB random layer")
            h = hashlib.sha256()
            with open(layer_path, "wb") as f:
                left = cfg["big_layer"]
                while left:
                    chunk = os.urandom(min(4 * MiB, left))
                    h.update(chunk)
                    f.write(chunk)
                    left -= len(chunk)
            ctx.update(layer_path=layer_path, layer_digest="sha256:" + h.hexdigest(), layer_size=cfg["big_layer"])
        blobs = []
        for _ in range(cfg["small_layers"]):
            b = rnd.randbytes(rnd.randint(cfg["small_min"], cfg["small_max"]))
            blobs.append((sha(b), b))
        ctx["small_blobs"] = blobs

        if not args.no_limits:
            try:
                results["limits"] = measure_limits(cfg, workdir, ctx["layer_path"])
            except Exception as e:  # noqa: BLE001
                results["errors"].append(f"limits: {e}")
                traceback.print_exc()

        for name, fn in SCENARIOS:
            if only and name not in only:
                continue
            for kind in args.registries.split(","):
                log(f"{name} on {kind}")
                srv = Server(kind, workdir, stowage_bin)
                servers.append(srv)
                try:
                    srv.start()
                    t = time.monotonic()
                    results[kind][name] = fn(srv, cfg, ctx)
                    results[kind][name]["scenario_seconds"] = time.monotonic() - t
                    if srv.auth:
                        results[kind][name]["auth"] = srv.auth.stats()
                    if srv.proc.poll() is not None:
                        raise BenchError(f"{kind} died during {name}:\n{srv.log_tail()}")
                except Exception as e:  # noqa: BLE001
                    msg = f"{name} on {kind}: {type(e).__name__}: {e}"
                    results["errors"].append(msg)
                    log("FAILED " + msg)
                    traceback.print_exc()
                    if srv.proc:
                        log(f"{kind} log tail:\n{srv.log_tail()}")
                finally:
                    srv.stop()
        # Online GC, usage and quotas (issue 10): Stowage on SQLite and PostgreSQL, and
        # distribution's offline garbage-collect on the same data.
        if stowage_bin and (not only or only & set(gc_bench.GC_SCENARIOS)):
            results["gc"] = gc_bench.run(stowage_bin, workdir, args.smoke, only, results["errors"])
        # Listings at scale (issue 11): SQLite and PostgreSQL.
        if stowage_bin and (not only or only & set(scale_bench.SCALE_SCENARIOS)):
            results["scale"] = scale_bench.run(stowage_bin, workdir, args.smoke, only, results["errors"])
        # Web UI render (issue 13): SQLite and PostgreSQL.
        if stowage_bin and (not only or only & set(ui_bench.UI_SCENARIOS)):
            results["ui"] = ui_bench.run(stowage_bin, workdir, args.smoke, only, results["errors"])
        # Dependency proxy (issue 14): warm pull vs a normal pull, cold pull vs the upstream.
        if stowage_bin and (not only or only & set(proxy_bench.PROXY_SCENARIOS)):
            results["proxy"] = proxy_bench.run(stowage_bin, workdir, args.smoke, only, results["errors"])
    finally:
        for srv in servers:
            srv.stop()
        remove_tree(workdir)

    results["meta"]["run_seconds"] = time.monotonic() - run_started
    results["meta"]["total_seconds"] = time.monotonic() - started
    md = render(results, cfg, args.smoke)
    md += gc_bench.render(results.get("gc"))
    md += scale_bench.render(results.get("scale"))
    md += ui_bench.render(results.get("ui"))
    md += proxy_bench.render(results.get("proxy"))
    md += f"\nRun time: {results['meta']['run_seconds']:.0f} s (plus {build_s or 0:.0f} s build).\n"
    os.makedirs(args.out, exist_ok=True)
    stem = "smoke" if args.smoke else "latest"
    with open(os.path.join(args.out, f"{stem}.md"), "w") as f:
        f.write(md)
    with open(os.path.join(args.out, f"{stem}.json"), "w") as f:
        json.dump(results, f, indent=2, sort_keys=True)
    sys.stdout.write(md)
    if results["errors"]:
        log(f"{len(results['errors'])} failure(s)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
