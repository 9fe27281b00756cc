"""Web UI render speed (issue 13, "Server-side render of the tag details page for a repository
with 100 000 tags: p50 under 20 ms for any page"; run by bench.py, `--only ui`).

    ui      100 000 tags on one manifest of one repository, seeded straight into the metadata
            database while the server is stopped (as scale_bench does), then, with token auth
            on (the web UI needs it), on SQLite and PostgreSQL, signed in as root through
            /users/sign_in: the tag details page `/<project>/container_registry/<id>` (20 rows)
            - first page, a page from the middle and the last page, reached by the keyset
              markers the page's own Next/Previous links carry (`?after=`, `?before=`);
            - by published time, newest first (first page) and from the middle;
            - a name search (`?search=`) for a rare substring;
            and the project's registry page. Each figure is p50/p99 (and max) over repeated
            requests on one keep-alive connection; every answer must be 200 with 20 tag rows
            (fewer only where the listing ends) and the links the next request follows.

Target (issue 13): p50 under 20 ms for every page.
"""

import re
import time
import urllib.parse

import bench as b
import gc_bench as g
import scale_bench as s

FULL = dict(tags=100_000, reps=200, cap_s=30.0)
SMOKE = dict(tags=2_000, reps=10, cap_s=5.0)

PROJECT = "bench/images"
TAGS_REPO = "bench/images/tags"
PER_PAGE = 20
TARGET_MS = 20.0


def seed(srv, cfg):
    """A private group and project and one tiny image through the API, then the tags by SQL."""
    srv.api("POST", "/groups", {"name": "bench", "path": "bench", "visibility": "private"}, expect=201)
    gid = srv.api("GET", "/groups")[0]["id"]
    pid = srv.api("POST", "/projects", {"name": "images", "path": "images", "namespace_id": gid},
                  expect=201)["id"]
    c = srv.client()
    manifest, _ = b.tiny_image(c, TAGS_REPO)
    b.put_manifest(c, TAGS_REPO, "t0000000", manifest)
    c.close()
    srv.stop()
    now = int(time.time() * 1000)
    t = time.monotonic()
    srv.sql(";\n".join([
        f"INSERT INTO tags (repository_id, name, manifest_id, created_at, updated_at) "
        f"SELECT r.id, {s.padded(srv, 't', 7)}, m.id, {now}, {now} + i "
        f"FROM {s.series(srv, cfg['tags'])}, repositories r JOIN manifests m ON m.repository_id = r.id "
        f"WHERE r.name = '{TAGS_REPO}'",
    ] + (["ANALYZE"] if srv.db else [])) + ";\n")
    seconds = time.monotonic() - t
    srv.start()
    return pid, seconds


def sign_in(srv):
    """Signs root in through the form, as a browser does; answers the session cookie header."""
    c = srv.client()
    r, body = c.request("GET", "/users/sign_in", expect=200)
    login = re.search(r"_stowage_login_csrf=([^;]+)", r.getheader("Set-Cookie") or "").group(1)
    token = re.search(rb'name="authenticity_token" value="([^"]+)"', body).group(1).decode()
    form = urllib.parse.urlencode({"username": "root", "password": b.ADMIN_PASSWORD,
                                   "authenticity_token": token}).encode()
    r, _ = c.request("POST", "/users/sign_in", body=form, expect=303, headers={
        "Content-Type": "application/x-www-form-urlencoded",
        "Cookie": f"_stowage_login_csrf={login}"})
    session = re.search(r"_stowage_session=([^;]+)", r.getheader("Set-Cookie") or "").group(1)
    c.close()
    return {"Cookie": f"_stowage_session={session}"}


def link(body, rel):
    """The page's own `rel=prev|next` link (HTML-unescaped), or None."""
    m = re.search(rb'<a href="([^"]+)" rel="' + rel.encode() + b'"', body)
    if not m:
        return None
    return m.group(1).decode().replace("&amp;", "&").replace("&#38;", "&")


def rows(body):
    return len(re.findall(rb'<tr class="tag"', body))


def timed(srv, path, headers, cfg, want_rows):
    """p50/p99/max of GET `path` over `reps` requests on one connection; checks every answer."""
    c = srv.client()
    lat = []
    deadline = time.monotonic() + cfg["cap_s"]
    body = b""
    while len(lat) < cfg["reps"] and (not lat or time.monotonic() < deadline):
        t = time.monotonic()
        _, body = c.request("GET", path, headers=headers, expect=200)
        lat.append((time.monotonic() - t) * 1000)
        if want_rows is not None and rows(body) != want_rows:
            raise b.BenchError(f"{path}: {rows(body)} tag rows, expected {want_rows}")
    c.close()
    lat.sort()
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    return {"p50_ms": lat[len(lat) // 2], "p99_ms": p99, "max_ms": lat[-1], "n": len(lat)}, body


def sc_ui(bin_, workdir, cfg, backend):
    srv = g.GcServer(bin_, workdir, backend, env={
        "STOWAGE_ADMIN_PASSWORD": b.ADMIN_PASSWORD, "STOWAGE_AUTH__TOKEN_LIFETIME": "2h"})
    out = {"config": cfg}
    try:
        srv.start()
        pid, out["seed_seconds"] = seed(srv, cfg)
        srv.extra["STOWAGE_AUTH__MODE"] = "token"
        srv.stop()
        srv.start()
        total = cfg["tags"] + 1  # t0000000 and the seeded t0000001…
        b.log(f"  ui on {backend}: seeded {cfg['tags']} tags in {out['seed_seconds']:.0f} s")
        rid = srv.api("GET", f"/projects/{pid}/registry/repositories")[0]["id"]
        headers = sign_in(srv)
        base = f"/{PROJECT}/container_registry/{rid}"
        c = srv.client()
        _, first = c.request("GET", base, headers=headers, expect=200)
        c.close()
        next_link = link(first, "next")
        if not next_link or rows(first) != PER_PAGE:
            raise b.BenchError(f"the first page has {rows(first)} rows and next link {next_link!r}")
        mid = f"t{total // 2:07d}"
        last = f"t{total - PER_PAGE - 1:07d}"
        cases = [
            ("tag details, first page", base, PER_PAGE),
            ("tag details, first page's Next link", next_link, PER_PAGE),
            (f"tag details, middle (after={mid})", f"{base}?after={mid}", PER_PAGE),
            (f"tag details, middle, Previous (before={mid})", f"{base}?before={mid}", PER_PAGE),
            (f"tag details, last page (after={last})", f"{base}?after={last}", PER_PAGE),
            ("tag details, newest first (sort=-published)", f"{base}?sort=-published", PER_PAGE),
            ("tag details, search=33333 (rare)", f"{base}?search=33333", None),
            ("project registry page", f"/{PROJECT}/container_registry", None),
        ]
        out["pages"] = {}
        for label, path, want in cases:
            try:
                fig, body = timed(srv, path, headers, cfg, want)
                if path.startswith(base + "?after=" + last) and link(body, "next"):
                    raise b.BenchError("the last page links to a next one")
            except Exception as e:  # noqa: BLE001
                fig = {"error": f"{type(e).__name__}: {e}"}
            out["pages"][label] = fig
            b.log(f"  ui {backend}: {label}: " + (
                f"p50 {fig['p50_ms']:.2f} ms, p99 {fig['p99_ms']:.2f} ms (max {fig['max_ms']:.1f})"
                if "p50_ms" in fig else fig["error"]))
        # From the middle by published time: the marker the newest-first page's Next link has.
        try:
            c = srv.client()
            _, newest = c.request("GET", f"{base}?sort=-published", headers=headers, expect=200)
            c.close()
            hop = link(newest, "next")
            if not hop:
                raise b.BenchError("the newest-first page has no Next link")
            fig, _ = timed(srv, hop, headers, cfg, PER_PAGE)
        except Exception as e:  # noqa: BLE001
            fig = {"error": f"{type(e).__name__}: {e}"}
        out["pages"]["tag details, newest first, its Next link"] = fig
        return out
    finally:
        srv.destroy()


UI_SCENARIOS = ["ui"]


def run(bin_, workdir, smoke, only, errors):
    cfg = SMOKE if smoke else FULL
    results = {}
    for backend in ["sqlite", "postgres"]:
        b.log(f"ui on {backend}")
        try:
            results[backend] = sc_ui(bin_, workdir, cfg, backend)
            for label, fig in results[backend]["pages"].items():
                if "error" in fig:
                    errors.append(f"ui {backend}: {label}: {fig['error']}")
        except Exception as e:  # noqa: BLE001
            msg = f"ui on {backend}: {type(e).__name__}: {e}"
            errors.append(msg)
            b.log("FAILED " + msg)
    return results


def render(ui):
    if not ui:
        return ""
    any_cfg = next((v["config"] for v in ui.values() if "config" in v), {})
    lines = ["", f"## Web UI render (issue 13): tag details page of a repository with "
             f"{any_cfg.get('tags', 0):,} tags, {PER_PAGE} rows a page", "",
             "| p50 / p99 (max) | SQLite | PostgreSQL | target |", "|---|---|---|---|"]
    labels = []
    for v in ui.values():
        for label in v.get("pages", {}):
            if label not in labels:
                labels.append(label)

    def cell(be, label):
        fig = ui.get(be, {}).get("pages", {}).get(label)
        if not fig:
            return "n/a"
        if "error" in fig:
            return "error"
        return f"{fig['p50_ms']:.2f} / {fig['p99_ms']:.2f} ms ({fig['max_ms']:.1f})"

    for label in labels:
        lines.append(f"| {label} | {cell('sqlite', label)} | {cell('postgres', label)} | p50 < {TARGET_MS:.0f} ms |")
    lines.append("")
    lines.append("Seeding (SQL, server stopped): " + ", ".join(
        f"{be} {v['seed_seconds']:.0f} s" for be, v in ui.items() if "seed_seconds" in v) + ".")
    return "\n".join(lines) + "\n"
