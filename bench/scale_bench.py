"""Listings at scale (issue 11, "Listings that stay fast at scale"; run by bench.py, `--only scale`).

    scale   1 000 000 tags in one repository and 100 000 repositories in one project, seeded
            straight into the metadata database while the server is stopped (not through HTTP
            pushes), then, with token auth on, on SQLite and PostgreSQL:
            - /v2/_catalog?n=100 first page and from the middle, for the instance admin and for
              a user who may see 5 of the 100 005 repositories (reporter on one small project);
            - /v2/<name>/tags/list?n=100 at the start and in the middle of the 1 M tags;
            - the REST tag listing (`page`/`per_page=100`) page 1 and page 9 999;
            - the keyset tag listing with `name=` (substring search): a rare and a common
              substring;
            - repository details with `tags_count` and `size`;
            - a project's and a group's repository listing (`per_page=100`), page 1 and 500.
            Figures are p50 (and max) over repeated requests on one keep-alive connection.

Target (issue 11): every listing page and detail view under 20 ms, for every caller.
"""

import base64
import json
import time
import urllib.parse

import bench as b
import gc_bench as g

FULL = dict(tags=1_000_000, repos=100_000, reps=20, cap_s=20.0)
SMOKE = dict(tags=2_000, repos=1_000, reps=3, cap_s=5.0)

GROUP = "bench"
TAGS_REPO = "bench/images/tags"
USER, USER_PASSWORD = "few", "stowage-bench-few-password"
TARGET_MS = 20.0


def series(srv, n):
    if srv.db:
        return f"generate_series(1, {n}) AS s(i)"
    return f"(WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {n}) SELECT i FROM s)"


def padded(srv, prefix, width):
    if srv.db:
        return f"'{prefix}' || lpad(i::text, {width}, '0')"
    return f"printf('{prefix}%0{width}d', i)"


def seed(srv, cfg):
    """Tenancy and one tiny image through the API, then the bulk rows by SQL (server stopped)."""
    srv.api("POST", "/groups", {"name": GROUP, "path": GROUP, "visibility": "private"}, expect=201)
    gid = srv.api("GET", "/groups")[0]["id"]
    projects = {}
    for p in ["images", "catalog", "few"]:
        projects[p] = srv.api("POST", "/projects", {"name": p, "path": p, "namespace_id": gid},
                              expect=201)["id"]
    user = srv.api("POST", "/users", {"username": USER, "email": "few@example.com", "name": USER,
                                      "password": USER_PASSWORD}, expect=201)
    srv.api("POST", f"/projects/{projects['few']}/members",
            {"user_id": user["id"], "access_level": 20}, expect=201)
    c = srv.client()
    manifest, _ = b.tiny_image(c, TAGS_REPO)
    b.put_manifest(c, TAGS_REPO, "t0000000", manifest)
    for i in range(5):
        b.tiny_image(c, f"bench/few/r{i}")
        b.put_manifest(c, f"bench/few/r{i}", "v1", manifest)
    c.close()
    srv.stop()
    now = int(time.time() * 1000)
    t = time.monotonic()
    srv.sql(";\n".join([
        f"INSERT INTO tags (repository_id, name, manifest_id, created_at, updated_at) "
        f"SELECT r.id, {padded(srv, 't', 7)}, m.id, {now}, {now} + i "
        f"FROM {series(srv, cfg['tags'])}, repositories r JOIN manifests m ON m.repository_id = r.id "
        f"WHERE r.name = '{TAGS_REPO}'",
        f"INSERT INTO repositories (name, created_at) "
        f"SELECT {padded(srv, 'bench/catalog/r', 6)}, {now} FROM {series(srv, cfg['repos'])}",
    # PostgreSQL's autovacuum would analyze the new rows soon; SQLite has no statistics
    # unless someone runs ANALYZE, and Stowage does not: measured as deployed.
    ] + (["ANALYZE"] if srv.db else [])) + ";\n")
    seconds = time.monotonic() - t
    srv.start()
    return projects, seconds


class Reader:
    """A registry client with one bearer token (docker's flow, done once up front)."""

    def __init__(self, srv, username, secret, scopes):
        c = srv.client()
        r, _ = c.request("GET", "/v2/")
        challenge = b.parse_challenge(r.getheader("WWW-Authenticate"))
        realm = urllib.parse.urlsplit(challenge["realm"]).path
        q = [("service", challenge.get("service", ""))] + [("scope", s) for s in scopes]
        basic = "Basic " + base64.b64encode(f"{username}:{secret}".encode()).decode()
        _, body = c.request("GET", realm + "?" + urllib.parse.urlencode(q),
                            headers={"Authorization": basic}, expect=200)
        c.close()
        self.headers = {"Authorization": "Bearer " + json.loads(body)["token"]}


def timed(srv, path, headers, cfg, check):
    """p50/max of GET `path` over `reps` requests on one connection."""
    c = srv.client()
    lat = []
    deadline = time.monotonic() + cfg["cap_s"]
    result = None
    while len(lat) < cfg["reps"] and (not lat or time.monotonic() < deadline):
        t = time.monotonic()
        r, body = c.request("GET", path, headers=headers, expect=200)
        lat.append((time.monotonic() - t) * 1000)
        result = check(r, json.loads(body))
    c.close()
    lat.sort()
    return {"p50_ms": lat[len(lat) // 2], "max_ms": lat[-1], "n": len(lat), "result": result}


def sc_scale(bin_, workdir, cfg, backend):
    # Seeded with auth off (the bench client pushes without tokens), measured with it on.
    srv = g.GcServer(bin_, workdir, backend, env={
        "STOWAGE_ADMIN_PASSWORD": b.ADMIN_PASSWORD, "STOWAGE_AUTH__TOKEN_LIFETIME": "2h"})
    out = {"config": cfg}
    try:
        srv.start()
        projects, out["seed_seconds"] = seed(srv, cfg)
        srv.extra["STOWAGE_AUTH__MODE"] = "token"
        srv.stop()
        srv.start()
        b.log(f"  scale on {backend}: seeded {cfg['tags']} tags, {cfg['repos']} repositories "
              f"in {out['seed_seconds']:.0f} s")
        admin_h = {"PRIVATE-TOKEN": b.ADMIN_TOKEN}
        repo = srv.api("GET", f"/projects/{projects['images']}/registry/repositories")[0]
        rid = repo["id"]
        admin_catalog = Reader(srv, "root", b.ADMIN_TOKEN, ["registry:catalog:*"]).headers
        few_catalog = Reader(srv, USER, USER_PASSWORD, ["registry:catalog:*"]).headers
        tags_reader = Reader(srv, "root", b.ADMIN_TOKEN, [f"repository:{TAGS_REPO}:pull"]).headers
        mid_repo = f"bench/catalog/r{cfg['repos'] // 2:06d}"
        mid_tag = f"t{cfg['tags'] // 2:07d}"
        last_page = max(1, (cfg["tags"] + 1) // 100)
        mid_page = max(1, min(500, cfg["repos"] // 200))

        def names(key, want=None):
            def check(r, body):
                items = body[key] if key else body
                if want is not None and len(items) != want:
                    raise b.BenchError(f"expected {want} items, got {len(items)}")
                return len(items)
            return check

        def few_check(r, body):
            got = body["repositories"]
            if got != [f"bench/few/r{i}" for i in range(5)]:
                raise b.BenchError(f"the restricted user's catalog is {got[:7]}")
            return len(got)

        cases = [
            ("catalog, admin, first page", "/v2/_catalog?n=100", admin_catalog, names("repositories", 100)),
            ("catalog, admin, middle", f"/v2/_catalog?n=100&last={mid_repo}", admin_catalog, names("repositories", 100)),
            ("catalog, user who sees 5, first page", "/v2/_catalog?n=100", few_catalog, few_check),
            ("catalog, user who sees 5, middle", f"/v2/_catalog?n=100&last={mid_repo}", few_catalog, names("repositories")),
            ("tags/list n=100, start", f"/v2/{TAGS_REPO}/tags/list?n=100", tags_reader, names("tags", 100)),
            ("tags/list n=100, middle", f"/v2/{TAGS_REPO}/tags/list?n=100&last={mid_tag}", tags_reader, names("tags", 100)),
            ("REST tags page 1 (per_page=100)", f"/api/v4/projects/{projects['images']}/registry/repositories/{rid}/tags?per_page=100&page=1", admin_h, names(None, 100)),
            (f"REST tags page {last_page} (per_page=100)", f"/api/v4/projects/{projects['images']}/registry/repositories/{rid}/tags?per_page=100&page={last_page}", admin_h, names(None)),
            ("keyset tags, name= rare substring", f"/api/v4/registry/repositories/{rid}/tags/list?n=100&name=333333", admin_h, names(None)),
            ("keyset tags, name= common substring", f"/api/v4/registry/repositories/{rid}/tags/list?n=100&name=t00", admin_h, names(None)),
            ("repository with tags_count and size", f"/api/v4/registry/repositories/{rid}?tags_count=true&size=true", admin_h, lambda r, body: body.get("tags_count")),
            ("repository details (size)", f"/api/v4/registry/repositories/{rid}/details", admin_h, lambda r, body: body.get("size_bytes")),
            ("project repositories page 1 (per_page=100)", f"/api/v4/projects/{projects['catalog']}/registry/repositories?per_page=100", admin_h, names(None, 100)),
            (f"project repositories page {mid_page} (per_page=100)", f"/api/v4/projects/{projects['catalog']}/registry/repositories?per_page=100&page={mid_page}", admin_h, names(None, 100)),
            ("group repositories page 1 (per_page=100)", f"/api/v4/groups/{GROUP}/registry/repositories?per_page=100", admin_h, names(None, 100)),
        ]
        out["pages"] = {}
        for label, path, headers, check in cases:
            try:
                fig = timed(srv, path, headers, cfg, check)
            except Exception as e:  # noqa: BLE001
                fig = {"error": f"{type(e).__name__}: {e}"}
            out["pages"][label] = fig
            b.log(f"  scale {backend}: {label}: " + (f"{fig['p50_ms']:.2f} ms (max {fig['max_ms']:.1f})"
                                                      if "p50_ms" in fig else fig["error"]))
        return out
    finally:
        srv.destroy()


SCALE_SCENARIOS = ["scale"]


def run(bin_, workdir, smoke, only, errors):
    cfg = SMOKE if smoke else FULL
    results = {}
    for backend in ["sqlite", "postgres"]:
        b.log(f"scale on {backend}")
        try:
            results[backend] = sc_scale(bin_, workdir, cfg, backend)
            for label, fig in results[backend]["pages"].items():
                if "error" in fig:
                    errors.append(f"scale {backend}: {label}: {fig['error']}")
        except Exception as e:  # noqa: BLE001
            msg = f"scale on {backend}: {type(e).__name__}: {e}"
            errors.append(msg)
            b.log("FAILED " + msg)
    return results


def render(scale):
    if not scale:
        return ""
    any_cfg = next((v["config"] for v in scale.values() if "config" in v), {})
    lines = ["", f"## Listings at scale (issue 11): {any_cfg.get('tags', 0):,} tags in one repository, "
             f"{any_cfg.get('repos', 0):,} repositories in one project", "",
             "| p50 (max) | SQLite | PostgreSQL | target |", "|---|---|---|---|"]
    labels = []
    for v in scale.values():
        for label in v.get("pages", {}):
            if label not in labels:
                labels.append(label)

    def cell(be, label):
        fig = scale.get(be, {}).get("pages", {}).get(label)
        if not fig:
            return "n/a"
        if "error" in fig:
            return "error"
        return f"{fig['p50_ms']:.2f} ms ({fig['max_ms']:.1f})"

    for label in labels:
        lines.append(f"| {label} | {cell('sqlite', label)} | {cell('postgres', label)} | < {TARGET_MS:.0f} ms |")
    lines.append("")
    lines.append("Seeding (SQL, server stopped): " + ", ".join(
        f"{be} {v['seed_seconds']:.0f} s" for be, v in scale.items() if "seed_seconds" in v) + ".")
    return "\n".join(lines) + "\n"
