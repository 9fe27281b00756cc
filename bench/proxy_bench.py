"""Dependency proxy benchmarks of issue 14 (run by bench.py, section "Dependency proxy").

    proxy   On one Stowage (SQLite, no auth) whose `dependency_proxy.upstream` is a local
            distribution 2.8:
            - warm pull: a manifest by tag and its 100 MiB layer through
              `<group>/dependency_proxy/containers/<image>` once the proxy has cached them,
              against the same image pushed to an ordinary repository of the same Stowage
              (target: at least as fast);
            - cold pull: a 1 GiB blob read straight from distribution, then through the proxy
              on a miss (streamed while it is stored), overhead in % (target: under 10 %).

Smoke runs use 8 MiB / 16 MiB. Each figure is the best of `reps` pulls (warm) or one pull
(cold: a second one would be warm), on the same machine as the servers; bytes are counted,
not hashed, on the client so that both sides pay the same.
"""

import os
import time

import bench as b
import gc_bench

PROXY_SCENARIOS = ["proxy"]

FULL = dict(warm_layer=100 << 20, cold_blob=1 << 30, reps=5)
SMOKE = dict(warm_layer=8 << 20, cold_blob=16 << 20, reps=2)

GROUP = "pgroup"
IMAGE = "proxybench/app"
BIG = "proxybench/big"


def random_file(path, size):
    """Writes `size` random bytes to `path`; returns their digest."""
    import hashlib
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(4 * b.MiB, left))
            h.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    return "sha256:" + h.hexdigest()


def push_image(port, repo, tag, layer_path, layer_digest, size):
    c = b.Client(port, timeout=600)
    try:
        with open(layer_path, "rb") as f:
            b.push_blob(c, repo, f, layer_digest, size)
        config = b.make_config([layer_digest])
        b.push_blob(c, repo, config, b.sha(config), len(config))
        manifest = b.make_manifest(config, [(layer_digest, size)])
        b.put_manifest(c, repo, tag, manifest)
        return manifest
    finally:
        c.close()


def timed_get(port, path, expect_size=None, accept=None):
    """GETs `path` on a fresh connection, reading the body in 1 MiB pieces; (seconds, bytes)."""
    c = b.Client(port, timeout=600)
    buf = bytearray(b.MiB)
    mv = memoryview(buf)
    try:
        t = time.monotonic()
        headers = {"Accept": accept} if accept else None
        r, _ = c.request("GET", path, read=False, headers=headers)
        if r.status != 200:
            raise b.BenchError(f"GET {path} -> {r.status}: {r.read()[:300]!r}")
        got = 0
        while True:
            n = r.readinto(mv)
            if not n:
                break
            got += n
        elapsed = time.monotonic() - t
    finally:
        c.close()
    if expect_size is not None and got != expect_size:
        raise b.BenchError(f"GET {path}: {got} bytes, expected {expect_size}")
    return elapsed, got


def pull(port, repo, tag, layer_digest, size):
    """A client's pull: the manifest by tag, then the layer. Seconds."""
    m, _ = timed_get(port, f"/v2/{repo}/manifests/{tag}", accept=b.ACCEPT)
    l, _ = timed_get(port, f"/v2/{repo}/blobs/{layer_digest}", expect_size=size)
    return m + l


def sc_proxy(bin_, workdir, cfg):
    res = {}
    upstream = b.Server("distribution", workdir, None)
    stowage = None
    try:
        upstream.start()
        env = {"STOWAGE_DEPENDENCY_PROXY__UPSTREAM": f"http://{b.HOST}:{upstream.port}"}
        stowage = gc_bench.GcServer(bin_, workdir, "sqlite", env).start()
        gid = stowage.api("POST", "/groups", {"name": GROUP, "path": GROUP, "visibility": "public"},
                          expect=201)["id"]
        bench_gid = stowage.api("POST", "/groups", {"name": b.GROUP, "path": b.GROUP}, expect=201)["id"]
        stowage.api("POST", "/projects", {"name": "images", "path": "images", "namespace_id": bench_gid},
                    expect=201)
        del gid

        # Warm: the same image in an ordinary repository and, cached, through the proxy.
        size = cfg["warm_layer"]
        layer = os.path.join(workdir, "proxy-warm.bin")
        digest = random_file(layer, size)
        push_image(upstream.port, IMAGE, "1", layer, digest, size)
        push_image(stowage.port, f"{b.IMAGES}/app", "1", layer, digest, size)
        os.unlink(layer)
        proxied = f"{GROUP}/dependency_proxy/containers/{IMAGE}"
        res["warm_first_pull_s"] = pull(stowage.port, proxied, "1", digest, size)  # fills the cache
        normal, warm = [], []
        for _ in range(cfg["reps"]):
            normal.append(pull(stowage.port, f"{b.IMAGES}/app", "1", digest, size))
            warm.append(pull(stowage.port, proxied, "1", digest, size))
        res["normal_pull_s"], res["warm_pull_s"] = min(normal), min(warm)
        res["normal_MBps"] = size / b.MB / res["normal_pull_s"]
        res["warm_MBps"] = size / b.MB / res["warm_pull_s"]
        res["warm_vs_normal"] = res["warm_pull_s"] / res["normal_pull_s"]
        b.log(f"  proxy warm pull {res['warm_MBps']:.0f} MB/s vs normal {res['normal_MBps']:.0f} MB/s")

        # Cold: straight from the upstream, then through the proxy on a miss.
        size = cfg["cold_blob"]
        big = os.path.join(workdir, "proxy-cold.bin")
        digest = random_file(big, size)
        push_image(upstream.port, BIG, "1", big, digest, size)
        os.unlink(big)
        direct, _ = timed_get(upstream.port, f"/v2/{BIG}/blobs/{digest}", expect_size=size)
        cold, _ = timed_get(stowage.port, f"/v2/{GROUP}/dependency_proxy/containers/{BIG}/blobs/{digest}",
                            expect_size=size)
        res.update(cold_size=size, direct_s=direct, cold_s=cold,
                   direct_MBps=size / b.MB / direct, cold_MBps=size / b.MB / cold,
                   cold_overhead=(cold - direct) / direct)
        b.log(f"  proxy cold pull {res['cold_MBps']:.0f} MB/s vs direct {res['direct_MBps']:.0f} MB/s "
              f"({100 * res['cold_overhead']:+.1f} %)")
        # Cached afterwards: the next pull does not reach the upstream.
        again, _ = timed_get(stowage.port, f"/v2/{GROUP}/dependency_proxy/containers/{BIG}/blobs/{digest}",
                             expect_size=size)
        res["cold_then_cached_MBps"] = size / b.MB / again
    finally:
        if stowage:
            stowage.destroy()
        upstream.stop()
    return res


def run(bin_, workdir, smoke, only, errors):
    """Runs the proxy scenarios `only` selects (all when None); returns their figures."""
    cfg = SMOKE if smoke else FULL
    results = {"config": cfg}
    if only and "proxy" not in only:
        return results
    b.log("proxy on sqlite")
    t = time.monotonic()
    try:
        fig = sc_proxy(bin_, workdir, cfg)
        fig["scenario_seconds"] = time.monotonic() - t
        results["proxy"] = fig
    except Exception as e:  # noqa: BLE001
        msg = f"proxy: {type(e).__name__}: {e}"
        errors.append(msg)
        b.log("FAILED " + msg)
    return results


def render(proxy):
    """The "Dependency proxy" section of the report."""
    fig = (proxy or {}).get("proxy")
    if not fig:
        return ""
    f = b.fmt
    cfg = proxy["config"]
    warm = f"{cfg['warm_layer'] >> 20} MiB"
    cold = f"{cfg['cold_blob'] >> 30} GiB" if cfg["cold_blob"] >= 1 << 30 else f"{cfg['cold_blob'] >> 20} MiB"
    return "\n".join([
        "", "## Dependency proxy (issue 14)", "",
        "| figure | value | target |", "|---|---|---|",
        f"| normal pull, manifest + {warm} layer (MB/s) | {f(fig['normal_MBps'])} | |",
        f"| warm proxy pull, same image cached (MB/s) | {f(fig['warm_MBps'])} | |",
        f"| warm proxy pull time / normal pull time | {fig['warm_vs_normal']:.2f} | ≤ 1.00 |",
        f"| {cold} blob straight from distribution (MB/s) | {f(fig['direct_MBps'])} | |",
        f"| {cold} blob through the proxy, cold (MB/s) | {f(fig['cold_MBps'])} | |",
        f"| cold proxy overhead | {100 * fig['cold_overhead']:+.1f} % | < 10 % |",
        f"| the same blob again, cached (MB/s) | {f(fig['cold_then_cached_MBps'])} | |",
        "",
    ]) + "\n"
