"""Online GC, usage and quota benchmarks of issue 10 (run by bench.py, section "Online GC").

    gc_review      dangling blobs reviewed per second on the metadata side (gc_events timestamps),
                   and storage objects deleted per second by the parallel storage deleter, on
                   SQLite and PostgreSQL: a backlog of dangling blobs (rows, links, review rows
                   due now and 1 KiB objects) is seeded while the server is stopped, then
                   `stowage serve` works through it with its default workers.
    gc_push        push p99 (one small image: two blobs and a manifest) on an idle server vs. the
                   same pushes while GC works through a backlog of dangling blobs (SQLite and
                   PostgreSQL); only pushes that finished while the backlog was not empty count.
    manifest_put   manifest PUT latency without usage bookkeeping (its triggers dropped), with
                   it (the default), and with a storage limit on the group (quota check).
    gc_offline     the same data in Stowage and distribution 2.8: N images pushed, half deleted
                   by digest, then one offline pass: `stowage gc run --min-age 0s` (server
                   stopped) vs. `registry garbage-collect --delete-untagged`.

Every server gets a fresh data directory (and a fresh PostgreSQL database, created with psql on
STOWAGE_BENCH_PG, default postgres://postgres@127.0.0.1:5432); everything is removed afterwards.
"""

import json
import os
import sqlite3
import subprocess
import threading
import time
import uuid

import bench as b

PG = os.environ.get("STOWAGE_BENCH_PG", "postgres://postgres@127.0.0.1:5432")

FULL = dict(review_blobs=100_000, push_backlog=100_000, push_images=300, push_idle_images=300,
            put_manifests=2_000, offline_images=2_000, drain_cap_s=600.0)
SMOKE = dict(review_blobs=300, push_backlog=300, push_images=10, push_idle_images=10,
             put_manifests=30, offline_images=10, drain_cap_s=60.0)

# The usage bookkeeping (migration 0009): dropped for the "without usage" figure.
USAGE_TRIGGERS = [
    ("usage_repository_created", "repositories"), ("usage_repository_deleting", "repositories"),
    ("usage_repository_deleted", "repositories"), ("usage_manifest_deleting", "manifests"),
    ("usage_manifest_blob_added", "manifest_blobs"), ("usage_manifest_blob_removed", "manifest_blobs"),
]
REPO = "bench/images/gc"


class GcServer:
    """`stowage serve` on SQLite or a fresh PostgreSQL database, with the admin token seeded."""

    def __init__(self, stowage_bin, workdir, backend, env=None):
        self.bin, self.backend, self.extra = stowage_bin, backend, dict(env or {})
        self.datadir = os.path.join(workdir, f"gc-{backend}-{uuid.uuid4().hex[:8]}")
        os.makedirs(self.datadir)
        self.db = None
        if backend == "postgres":
            self.db = f"stowage_bench_{uuid.uuid4().hex[:12]}"
            psql("postgres", f"CREATE DATABASE {self.db}")
        self.proc = None
        self.port = None

    def env(self):
        env = {k: v for k, v in os.environ.items() if k != "RUST_LOG" and not k.startswith("STOWAGE_")}
        env.update(STOWAGE_DATA_DIR=self.datadir, STOWAGE_LOG__LEVEL="warn", STOWAGE_AUTH__MODE="none",
                   STOWAGE_ADMIN_TOKEN=b.ADMIN_TOKEN,
                   STOWAGE_STORAGE__MAINTENANCE__UPLOADPURGING__ENABLED="false")
        if self.db:
            env["STOWAGE_DATABASE_URL"] = f"{PG}/{self.db}"
        env.update(self.extra)
        return env

    def start(self):
        self.port = b.free_port()
        env = self.env()
        env["STOWAGE_HTTP_ADDR"] = f"{b.HOST}:{self.port}"
        self.logf = open(self.datadir + ".log", "ab")
        self.started = time.monotonic()
        self.proc = subprocess.Popen([self.bin, "serve"], env=env, stdout=self.logf,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise b.BenchError(f"stowage exited at start:\n{self.log_tail()}")
            try:
                c = b.Client(self.port, timeout=2)
                r, _ = c.request("GET", "/v2/")
                c.close()
                # With token auth (scale_bench), /v2/ answers 401 with a challenge once up.
                token_auth = self.extra.get("STOWAGE_AUTH__MODE") == "token"
                if r.status == 200 or (token_auth and r.status == 401):
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise b.BenchError(f"stowage did not start within 60 s:\n{self.log_tail()}")
            time.sleep(0.02)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.logf.close()
        self.proc = None

    def destroy(self):
        self.stop()
        if self.db:
            psql("postgres", f"DROP DATABASE IF EXISTS {self.db} WITH (FORCE)")
        b.remove_tree(self.datadir)

    def log_tail(self, n=20):
        try:
            with open(self.datadir + ".log", "rb") as f:
                return b"\n".join(f.read().splitlines()[-n:]).decode(errors="replace")
        except OSError:
            return ""

    def client(self):
        return b.Client(self.port)

    def api(self, method, path, body=None, expect=200):
        c = self.client()
        try:
            h = {"PRIVATE-TOKEN": b.ADMIN_TOKEN, "Content-Type": "application/json"}
            data = json.dumps(body).encode() if body is not None else None
            _, out = c.request(method, "/api/v4" + path, body=data, headers=h, expect=expect)
            return json.loads(out) if out else None
        finally:
            c.close()

    def stowage(self, *args):
        t = time.monotonic()
        out = subprocess.run([self.bin, *args], env=self.env(), capture_output=True, text=True)
        if out.returncode != 0:
            raise b.BenchError(f"stowage {' '.join(args)}: {out.stderr[-2000:]}")
        return out.stdout, time.monotonic() - t

    def sql(self, script):
        """Runs statements on the metadata database (the server may be running on PostgreSQL)."""
        if self.db:
            return psql(self.db, script)
        con = sqlite3.connect(os.path.join(self.datadir, "stowage.db"), timeout=60)
        try:
            rows = []
            for stmt in [s for s in script.split(";\n") if s.strip()]:
                rows = con.execute(stmt).fetchall()
            con.commit()
            return rows
        finally:
            con.close()


def psql(db, script):
    out = subprocess.run(["psql", f"{PG}/{db}", "-v", "ON_ERROR_STOP=1", "-qAt", "-F", "\t", "-c", script],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise b.BenchError(f"psql: {out.stderr[-1000:]}")
    return [tuple(line.split("\t")) for line in out.stdout.splitlines() if line]


def seed_dangling(srv, n, objects=True):
    """`n` dangling blobs linked to one repository, their review rows due long ago, and (with
    `objects`) a 1 KiB object each: what deleted images leave behind. The server is stopped."""
    now = int(time.time() * 1000)
    if srv.db:
        digest = "'sha256:' || lpad(to_hex(i), 64, '0')"
        series = f"generate_series(1, {n}) AS i"
    else:
        digest = "printf('sha256:%064x', i)"
        series = f"(WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {n}) SELECT i FROM s)"
    srv.sql(";\n".join([
        f"INSERT INTO repositories (name, created_at) VALUES ('bench/images/dangling', {now})",
        f"INSERT INTO blobs (digest, size, created_at) SELECT {digest}, 1024, 0 FROM {series}",
        f"INSERT INTO repository_blobs (repository_id, blob_digest, created_at) SELECT "
        f"(SELECT id FROM repositories WHERE name = 'bench/images/dangling'), {digest}, 0 FROM {series}",
        f"INSERT INTO gc_blob_review_queue (digest, review_after, event, created_at) "
        f"SELECT {digest}, 0, 'bench', 0 FROM {series}",
    ]) + ";\n")
    if objects:
        payload = b"\0" * 1024
        for i in range(1, n + 1):
            hexd = format(i, "064x")
            d = os.path.join(srv.datadir, "blobs", "sha256", hexd[:2])
            if i == 1 or hexd[:2] != format(i - 1, "064x")[:2]:
                os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, hexd), "wb") as f:
                f.write(payload)


def gc_figures(srv):
    return srv.api("GET", "/admin/registry/gc")


def wait_drained(srv, cap_s, storage=True):
    """Polls the GC figures until the blob queue (and the storage deletions) are empty; returns
    the monotonic time the blob queue was first seen empty."""
    deadline = time.monotonic() + cap_s
    queue_empty = None
    while time.monotonic() < deadline:
        f = gc_figures(srv)
        if queue_empty is None and f["review_queues"]["blobs"]["queued"] == 0:
            queue_empty = time.monotonic()
        if queue_empty is not None and (not storage or f["storage_deletions"]["pending"] == 0):
            return queue_empty
        time.sleep(0.1)
    raise b.Unavailable(f"GC did not drain within {cap_s:.0f} s")


def event_rate(srv, kind):
    """Items per second from the gc_events timestamps of `kind` (first to last)."""
    rows = srv.sql(f"SELECT COUNT(*), MIN(at), MAX(at) FROM gc_events WHERE kind = '{kind}' "
                   f"AND outcome = 'deleted'")
    n, first, last = (int(x) if x not in (None, "") else 0 for x in rows[0])
    return n, (n / ((last - first) / 1000) if last > first else None), (last - first) / 1000


def sc_gc_review(bin_, workdir, cfg, backend):
    n = cfg["review_blobs"]
    srv = GcServer(bin_, workdir, backend)
    try:
        srv.start()
        srv.stop()
        t = time.monotonic()
        seed_dangling(srv, n)
        seed_s = time.monotonic() - t
        srv.start()
        wait_drained(srv, cfg["drain_cap_s"])
        blobs, blob_rate, blob_s = event_rate(srv, "blob")
        objects, storage_rate, storage_s = event_rate(srv, "storage")
        left = srv.sql("SELECT COUNT(*) FROM blobs")[0][0]
        if blobs != n or objects != n or int(left) != 0:
            raise b.BenchError(f"reviewed {blobs}, deleted {objects} objects of {n}; {left} blobs left")
        stored = sum(len(files) for _, _, files in os.walk(os.path.join(srv.datadir, "blobs")))
        if stored:
            raise b.BenchError(f"{stored} objects left in storage")
        return dict(items=n, seed_seconds=seed_s, review_per_s=blob_rate, review_seconds=blob_s,
                    storage_deletes_per_s=storage_rate, storage_seconds=storage_s)
    finally:
        srv.destroy()


def push_small_image(c, i, salt):
    layer = f"gc-bench layer {salt} {i}\n".encode() * 32
    config = b.make_config([b.sha(layer)])
    b.push_blob(c, REPO, layer, b.sha(layer), len(layer))
    b.push_blob(c, REPO, config, b.sha(config), len(config))
    b.put_manifest(c, REPO, f"t{salt}-{i}", b.make_manifest(config, [(b.sha(layer), len(layer))]))


def timed_pushes(srv, count, salt, until=None):
    """Pushes up to `count` small images one after the other; returns the latency of each push
    that finished while `until()` (if given) was still true."""
    c = srv.client()
    lat = []
    try:
        for i in range(count):
            t = time.monotonic()
            push_small_image(c, i, salt)
            if until is not None and not until():
                break
            lat.append(time.monotonic() - t)
    finally:
        c.close()
    return lat


# How often the push scenario reads the GC figures (to see the backlog drained). The same in
# the idle and the busy phase: the figures endpoint counts the queues and a day of gc_events,
# tens of milliseconds of CPU at a 100 000-item backlog, so polling it every 50 ms in the busy
# phase only (as this bench first did) took most of a core from the pushes it measured.
WATCH_EVERY_S = 0.5


def watch_backlog(srv, flag):
    """Polls the GC figures every WATCH_EVERY_S until the blob review queue is empty or
    `flag["busy"]` is cleared; then clears it."""
    while flag["busy"]:
        try:
            if gc_figures(srv)["review_queues"]["blobs"]["queued"] == 0:
                flag["busy"] = False
                return
        except Exception:  # noqa: BLE001 (server restarting)
            pass
        time.sleep(WATCH_EVERY_S)


def sc_gc_push(bin_, workdir, cfg, backend):
    out = {}
    srv = GcServer(bin_, workdir, backend)
    try:
        srv.start()
        timed_pushes(srv, 5, "warm")
        # Idle: nothing queued, so the watcher polls (as in the busy phase) until stopped.
        idle_flag = {"busy": True}
        srv.sql("INSERT INTO gc_blob_review_queue (digest, review_after, event, created_at) "
                "VALUES ('sha256:" + "f" * 64 + "', 9000000000000, 'bench', 0)")
        watcher = threading.Thread(target=watch_backlog, args=(srv, idle_flag), daemon=True)
        watcher.start()
        idle = timed_pushes(srv, cfg["push_idle_images"], "idle")
        idle_flag["busy"] = False
        watcher.join(5)
    finally:
        srv.destroy()
    srv = GcServer(bin_, workdir, backend)
    try:
        srv.start()
        srv.stop()
        seed_dangling(srv, cfg["push_backlog"], objects=False)
        busy_flag = {"busy": True}
        srv.start()
        watcher = threading.Thread(target=watch_backlog, args=(srv, busy_flag), daemon=True)
        watcher.start()
        timed_pushes(srv, 5, "warm")
        before = gc_figures(srv)["review_queues"]["blobs"]["queued"]
        t = time.monotonic()
        busy = timed_pushes(srv, cfg["push_images"], "busy", until=lambda: busy_flag["busy"])
        busy_s = time.monotonic() - t
        backlog_left = gc_figures(srv)["review_queues"]["blobs"]["queued"]
        busy_flag["busy"] = False
        watcher.join(5)
    finally:
        srv.destroy()
    for name, lat in (("idle", idle), ("busy", busy)):
        out[name] = dict(pushes=len(lat), p50_ms=1000 * b.pct(lat, 50) if lat else None,
                         p99_ms=1000 * b.pct(lat, 99) if lat else None)
    out["backlog"] = cfg["push_backlog"]
    out["backlog_left_after"] = backlog_left
    # How fast GC went on while it gave way to the pushes (see crates/gc/src/pacing.rs).
    out["busy_seconds"] = busy_s
    out["review_per_s_while_pushing"] = (before - backlog_left) / busy_s if busy_s > 0 else None
    if idle and busy:
        out["p99_change"] = out["busy"]["p99_ms"] / out["idle"]["p99_ms"] - 1
    return out


def manifest_puts(srv, count, salt):
    """PUTs `count` distinct manifests over the same config and layer (each with a tag)."""
    c = srv.client()
    try:
        layer = f"usage layer {salt}\n".encode() * 64
        config = b.make_config([b.sha(layer)])
        b.push_blob(c, REPO, layer, b.sha(layer), len(layer))
        b.push_blob(c, REPO, config, b.sha(config), len(config))
        lat = []
        for i in range(count):
            m = json.loads(b.make_manifest(config, [(b.sha(layer), len(layer))]))
            m["annotations"] = {"n": f"{salt}-{i}"}
            body = json.dumps(m, separators=(",", ":")).encode()
            t = time.monotonic()
            b.put_manifest(c, REPO, f"m{i}", body)
            lat.append(time.monotonic() - t)
        return lat
    finally:
        c.close()


def sc_manifest_put(bin_, workdir, cfg, backend):
    out = {}
    for variant in ("no_usage", "usage", "usage_quota"):
        srv = GcServer(bin_, workdir, backend)
        try:
            srv.start()
            group = srv.api("POST", "/groups", {"name": b.GROUP, "path": b.GROUP}, expect=201)
            srv.api("POST", "/projects", {"name": "images", "path": "images",
                                          "namespace_id": group["id"]}, expect=201)
            if variant == "usage_quota":
                srv.api("PUT", f"/groups/{group['id']}", {"container_registry_storage_limit": 1 << 40})
            if variant == "no_usage":
                srv.stop()
                srv.sql(";\n".join(f"DROP TRIGGER {name}" + (f" ON {table}" if srv.db else "")
                                   for name, table in USAGE_TRIGGERS) + ";\n")
                srv.start()
            manifest_puts(srv, 20, "warm")
            lat = manifest_puts(srv, cfg["put_manifests"], variant)
            usage = srv.api("GET", f"/groups/{group['id']}?statistics=true")
            out[variant] = dict(puts=len(lat), p50_ms=1000 * b.pct(lat, 50), p99_ms=1000 * b.pct(lat, 99),
                                mean_ms=1000 * sum(lat) / len(lat),
                                usage_bytes=(usage.get("statistics") or {}).get("container_registry_size"))
        finally:
            srv.destroy()
    return out


def offline_images(c, n, repo):
    """Pushes `n` images with a unique layer each; returns their manifest digests."""
    digests = []
    for i in range(n):
        layer = f"offline gc layer {i}\n".encode() * 256
        config = b.make_config([b.sha(layer)])
        b.push_blob(c, repo, layer, b.sha(layer), len(layer))
        b.push_blob(c, repo, config, b.sha(config), len(config))
        m = b.make_manifest(config, [(b.sha(layer), len(layer))])
        b.put_manifest(c, repo, f"v{i}", m)
        digests.append(b.sha(m))
    return digests


def delete_half(c, repo, digests):
    for d in digests[::2]:
        c.request("DELETE", f"/v2/{repo}/manifests/{d}", expect=202)


def count_files(root):
    return sum(len(files) for _, _, files in os.walk(root))


def sc_gc_offline(bin_, workdir, cfg):
    n = cfg["offline_images"]
    out = {"images": n, "deleted": len(range(0, n, 2))}
    srv = GcServer(bin_, workdir, "sqlite")
    try:
        srv.start()
        c = srv.client()
        delete_half(c, REPO, offline_images(c, n, REPO))
        c.close()
        srv.stop()
        before = count_files(os.path.join(srv.datadir, "blobs"))
        stdout, secs = srv.stowage("gc", "run", "--min-age", "0s")
        after = count_files(os.path.join(srv.datadir, "blobs"))
        out["stowage"] = dict(seconds=secs, objects_removed=before - after, summary=stdout.strip().splitlines()[-1])
    finally:
        srv.destroy()
    root = os.path.join(workdir, f"dist-gc-{uuid.uuid4().hex[:8]}")
    os.makedirs(root)
    config = root + ".yml"
    port = b.free_port()
    with open(config, "w") as f:
        f.write(b.DISTRIBUTION_CONFIG.format(root=os.path.join(root, "storage"), addr=f"{b.HOST}:{port}"))
    logf = open(root + ".log", "wb")
    proc = subprocess.Popen(["docker-registry", "serve", config], stdout=logf, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, cwd=root)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                c = b.Client(port, timeout=2)
                c.request("GET", "/v2/", expect=200)
                c.close()
                break
            except (OSError, b.BenchError):
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise b.BenchError("distribution did not start")
                time.sleep(0.05)
        c = b.Client(port)
        delete_half(c, REPO, offline_images(c, n, REPO))
        c.close()
        proc.terminate()
        proc.wait(20)
        blobs_dir = os.path.join(root, "storage", "docker", "registry", "v2", "blobs")
        before = count_files(blobs_dir)
        t = time.monotonic()
        gc = subprocess.run(["docker-registry", "garbage-collect", "--delete-untagged", config],
                            capture_output=True, text=True)
        secs = time.monotonic() - t
        if gc.returncode != 0:
            raise b.BenchError(f"registry garbage-collect: {gc.stderr[-1000:]}")
        after = count_files(blobs_dir)
        out["distribution"] = dict(seconds=secs, objects_removed=before - after)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        logf.close()
        b.remove_tree(root)
    return out


GC_SCENARIOS = ["gc_review", "gc_push", "manifest_put", "gc_offline"]


def run(bin_, workdir, smoke, only, errors):
    """Runs the GC scenarios `only` selects (all when None); returns their figures."""
    cfg = SMOKE if smoke else FULL
    results = {"config": cfg}
    for name in GC_SCENARIOS:
        if only and name not in only:
            continue
        backends = ["sqlite"] if name == "gc_offline" else ["sqlite", "postgres"]
        for backend in backends:
            b.log(f"{name} on {backend}")
            t = time.monotonic()
            try:
                if name == "gc_review":
                    fig = sc_gc_review(bin_, workdir, cfg, backend)
                elif name == "gc_push":
                    fig = sc_gc_push(bin_, workdir, cfg, backend)
                elif name == "manifest_put":
                    fig = sc_manifest_put(bin_, workdir, cfg, backend)
                else:
                    fig = sc_gc_offline(bin_, workdir, cfg)
                fig["scenario_seconds"] = time.monotonic() - t
                results.setdefault(name, {})[backend] = fig
            except b.Unavailable as e:
                results.setdefault(name, {})[backend] = {"unavailable": str(e)}
            except Exception as e:  # noqa: BLE001
                msg = f"{name} on {backend}: {type(e).__name__}: {e}"
                errors.append(msg)
                b.log("FAILED " + msg)
    return results


def render(gc):
    """The "Online GC" section of the report."""
    if not gc or len(gc) <= 1:
        return ""
    f = b.fmt
    lines = ["", "## Online GC, usage and quotas (issue 10)", ""]
    rev = gc.get("gc_review", {})
    if rev:
        lines += ["| GC review | SQLite | PostgreSQL | target |", "|---|---|---|---|"]
        for label, key, unit, target in [
            ("dangling blobs reviewed (metadata)", "review_per_s", "/s", "≥ 10 000/s"),
            ("storage objects deleted (parallel)", "storage_deletes_per_s", "/s", ""),
            ("backlog", "items", "", ""),
        ]:
            lines.append(f"| {label} | " + " | ".join(
                f(rev.get(be, {}).get(key), unit, 0) if "unavailable" not in rev.get(be, {})
                else "unavailable" for be in ("sqlite", "postgres")) + f" | {target} |")
        lines.append("")
    push = gc.get("gc_push", {})
    if push:
        lines += ["| push p99 (small image) | SQLite | PostgreSQL | target |", "|---|---|---|---|"]
        for label, path in [("idle", ("idle", "p99_ms")), ("while GC works", ("busy", "p99_ms"))]:
            lines.append(f"| {label} | " + " | ".join(
                f(b.get(push.get(be, {}), *path), " ms", 1) for be in ("sqlite", "postgres")) + " | |")
        lines.append("| change | " + " | ".join(
            (f"{100 * push[be]['p99_change']:+.0f} %" if push.get(be, {}).get("p99_change") is not None
             else "n/a") for be in ("sqlite", "postgres")) + " | within +20 % |")
        lines.append("| GC review rate while pushing | " + " | ".join(
            f(push.get(be, {}).get("review_per_s_while_pushing"), "/s", 0) for be in ("sqlite", "postgres")) + " | |")
        lines.append("| pushes measured (idle / busy) | " + " | ".join(
            f"{b.get(push.get(be, {}), 'idle', 'pushes')} / {b.get(push.get(be, {}), 'busy', 'pushes')}"
            for be in ("sqlite", "postgres")) + " | |")
        lines.append("")
    put = gc.get("manifest_put", {})
    if put:
        lines += ["| manifest PUT p50 / p99 | SQLite | PostgreSQL |", "|---|---|---|"]
        for label, v in [("without usage bookkeeping", "no_usage"), ("with usage (default)", "usage"),
                         ("with usage and a group limit", "usage_quota")]:
            lines.append(f"| {label} | " + " | ".join(
                f"{f(b.get(put.get(be, {}), v, 'p50_ms'), ' ms', 2)} / {f(b.get(put.get(be, {}), v, 'p99_ms'), ' ms', 2)}"
                for be in ("sqlite", "postgres")) + " |")
        lines.append("")
    off = gc.get("gc_offline", {}).get("sqlite")
    if off and "stowage" in off:
        lines += [f"Offline pass over {off['images']} images with {off['deleted']} deleted by digest:",
                  "", "| | seconds | objects removed |", "|---|---|---|",
                  f"| Stowage `gc run --min-age 0s` (SQLite, server stopped) | {f(off['stowage']['seconds'], '', 2)} | {off['stowage']['objects_removed']} |"]
        if "distribution" in off:
            lines.append(f"| distribution `garbage-collect --delete-untagged` | {f(off['distribution']['seconds'], '', 2)} | {off['distribution']['objects_removed']} |")
        lines.append("")
    return "\n".join(lines) + "\n"
