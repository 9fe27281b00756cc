"""Stowage's /api/v4 driven by python-gitlab, GitLab's own client library, through its own
objects: what a GitLab script does must work unchanged. Run by tests/tests/python_gitlab.rs
against a real server with STOWAGE_URL (http://host:port) and STOWAGE_TOKEN (root's token
with every scope). Every check is an assert; the first failure ends the script non-zero."""

import hashlib
import json
import os
import sys

import gitlab
import requests
from gitlab.const import AccessLevel

URL = os.environ["STOWAGE_URL"]
ROOT_TOKEN = os.environ["STOWAGE_TOKEN"]
HOST = URL.split("://", 1)[1]


def step(name):
    print(f"--- {name}", flush=True)


def refused(call, status, *words):
    """`call` raises GitLab's error for `status`, and its message names every word."""
    try:
        call()
    except gitlab.exceptions.GitlabError as e:
        assert e.response_code == status, f"expected {status}, got {e.response_code}: {e.error_message}"
        for w in words:
            assert w in str(e.error_message), f"{w!r} not in {e.error_message!r}"
        return e
    raise AssertionError(f"expected a {status} refusal")


def push(repository, tag, username, secret):
    """Pushes a one-layer OCI image with the Docker token flow, as a registry client would."""
    s = requests.Session()
    r = s.get(
        f"{URL}/jwt/auth",
        params={"service": "container_registry", "scope": f"repository:{repository}:push,pull"},
        auth=(username, secret),
    )
    assert r.status_code == 200, r.text
    auth = {"Authorization": f"Bearer {r.json()['token']}"}
    config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
    layer = os.urandom(128)
    descriptors = []
    for blob, media_type in (
        (config, "application/vnd.oci.image.config.v1+json"),
        (layer, "application/vnd.oci.image.layer.v1.tar+gzip"),
    ):
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        r = s.post(f"{URL}/v2/{repository}/blobs/uploads/", headers=auth)
        assert r.status_code == 202, r.text
        location = r.headers["Location"]
        if location.startswith("/"):
            location = URL + location
        sep = "&" if "?" in location else "?"
        r = s.put(
            f"{location}{sep}digest={digest}",
            data=blob,
            headers={**auth, "Content-Type": "application/octet-stream"},
        )
        assert r.status_code == 201, r.text
        descriptors.append({"mediaType": media_type, "digest": digest, "size": len(blob)})
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": descriptors[0],
            "layers": descriptors[1:],
        }
    ).encode()
    r = s.put(
        f"{URL}/v2/{repository}/manifests/{tag}",
        data=manifest,
        headers={**auth, "Content-Type": "application/vnd.oci.image.manifest.v1+json"},
    )
    assert r.status_code == 201, r.text


gl = gitlab.Gitlab(URL, private_token=ROOT_TOKEN)

step("auth and version")
gl.auth()
assert gl.user.username == "root"
version, revision = gl.version()
assert version not in ("unknown", ""), version

step("users: create, exact username filter, search")
alice = gl.users.create(
    {"username": "alice", "email": "alice@example.com", "name": "Alice", "password": "alice-password-1"}
)
bob = gl.users.create(
    {"username": "bob", "email": "bob@example.com", "name": "Bob", "password": "bob-password-1"}
)
# The bug that made scripts act on root: the filter was ignored and root came first.
found = gl.users.list(username="alice")
assert [u.username for u in found] == ["alice"], [u.username for u in found]
assert gl.users.list(username="ALICE")[0].id == alice.id
assert gl.users.list(username="nobody") == []
assert [u.username for u in gl.users.list(search="BO", get_all=True)] == ["bob"]
refused(lambda: gl.users.list(usernme="alice"), 400, "usernme", "username")
refused(lambda: gl.users.list(active="maybe"), 400, "active", "boolean")
assert {u.username for u in gl.users.list(active=True, get_all=True)} == {"root", "alice", "bob"}

step("users: order and pages")
names = [u.username for u in gl.users.list(order_by="username", sort="asc", get_all=True)]
assert names == ["alice", "bob", "root"], names
ids = [u.id for u in gl.users.list(get_all=True)]
assert ids == sorted(ids, reverse=True), ids  # GitLab's default: id, descending
pages = gl.users.list(iterator=True, per_page=1, order_by="id", sort="asc")
assert pages.total == 3 and pages.total_pages == 3 and pages.per_page == 1
assert [u.username for u in pages] == ["root", "alice", "bob"]
second = gl.users.list(per_page=1, page=2, order_by="id", sort="asc")
assert [u.username for u in second] == ["alice"]
refused(lambda: gl.users.list(order_by="stars"), 400, "order_by", "username")

step("users: PUT /users/:id (admins)")
alice.name = "Alice Liddell"
alice.save()
assert gl.users.get(alice.id).name == "Alice Liddell"
refused(lambda: gl.users.update(bob.id, {"password": "short"}), 400, "password", "8")
gl.users.update(bob.id, {"password": "bob-new-password"})
gl.users.update(bob.id, {"state": "blocked"})
assert gl.users.get(bob.id).state == "blocked"
bob.unblock()
assert gl.users.get(bob.id).state == "active"
bob.block()
assert gl.users.get(bob.id).state == "blocked"
bob.unblock()
refused(lambda: gl.users.update(bob.id, {"username": "robert"}), 400, "username")
refused(lambda: gl.users.update(gl.user.id, {"admin": False}), 403, "admin")

step("groups and projects")
acme = gl.groups.create({"name": "acme", "path": "acme"})
team = gl.groups.create({"name": "team", "path": "team", "parent_id": acme.id})
other = gl.groups.create({"name": "other", "path": "other"})
acme.members.create({"user_id": alice.id, "access_level": AccessLevel.DEVELOPER})
app = gl.projects.create({"name": "app", "namespace_id": team.id})
tool = gl.projects.create({"name": "tool", "namespace_id": other.id})
app.members.create({"user_id": bob.id, "access_level": AccessLevel.REPORTER})
assert gl.projects.get(app.id).container_registry_image_prefix == f"{HOST}/acme/team/app"
assert gl.projects.get("acme/team/app").id == app.id

alice_pat = alice.personal_access_tokens.create({"name": "alice-api", "scopes": ["api", "write_registry"]})
ga = gitlab.Gitlab(URL, private_token=alice_pat.token)
ga.auth()
assert ga.user.username == "alice"

step("filters: search, owned, membership, min_access_level")
seen = ga.users.list(username="bob")
assert [u.username for u in seen] == ["bob"]
assert "email" not in seen[0].attributes, "non-admins see public fields only"
assert [p.path_with_namespace for p in ga.projects.list(membership=True, get_all=True)] == ["acme/team/app"]
assert ga.projects.list(owned=True) == []
assert [p.id for p in ga.projects.list(min_access_level=AccessLevel.DEVELOPER)] == [app.id]
assert ga.projects.list(min_access_level=AccessLevel.MAINTAINER) == []
refused(lambda: ga.projects.list(min_access_level=35), 400, "min_access_level")
assert [p.id for p in gl.projects.list(search="TOO")] == [tool.id]
assert [g.full_path for g in ga.groups.list(min_access_level=30, order_by="path", get_all=True)] == [
    "acme",
    "acme/team",
]
assert ga.groups.list(owned=True) == []
assert [g.full_path for g in gl.groups.list(owned=True, order_by="path", sort="desc", get_all=True)] == [
    "other",
    "acme/team",
    "acme",
]
assert [g.full_path for g in gl.groups.list(search="oth")] == ["other"]
assert [g.full_path for g in gl.groups.list(top_level_only=True, order_by="path")] == ["acme", "other"]
refused(lambda: gl.groups.list(starred=True), 400, "starred")
refused(lambda: gl.projects.list(owned="yes please"), 400, "owned")
# Pagination headers on every listing, even a short one.
r = requests.get(f"{URL}/api/v4/groups?per_page=1&search=a", headers={"PRIVATE-TOKEN": ROOT_TOKEN})
assert r.headers["X-Total"] == "2" and r.headers["X-Next-Page"] == "2", r.headers
assert "search=a" in r.headers["Link"], r.headers["Link"]

step("members, inherited members included")
direct = {m.username: m.access_level for m in app.members.list(get_all=True)}
assert direct == {"bob": AccessLevel.REPORTER}, direct
everyone = {m.username: m.access_level for m in app.members_all.list(get_all=True)}
assert everyone == {"root": AccessLevel.OWNER, "alice": AccessLevel.DEVELOPER, "bob": AccessLevel.REPORTER}, everyone
assert app.members_all.get(alice.id).access_level == AccessLevel.DEVELOPER
assert {m.username for m in team.members_all.list(get_all=True)} == {"root", "alice"}
assert [m.username for m in app.members_all.list(query="ali")] == ["alice"]
refused(lambda: app.members_all.get(9999), 404, "Member")

step("job token scope and allowlist")
scope = app.job_token_scope.get()
assert scope.inbound_enabled is True
scope.allowlist.create({"target_project_id": tool.id})
assert [p.id for p in scope.allowlist.list(get_all=True)] == [tool.id]
scope.allowlist.delete(tool.id)
assert scope.allowlist.list(get_all=True) == []

step("deploy tokens, instance-wide")
app.deploytokens.create({"name": "pull", "scopes": ["read_registry"]})
acme.deploytokens.create({"name": "ci", "scopes": ["read_registry", "write_registry"]})
assert sorted(t.name for t in gl.deploytokens.list(get_all=True)) == ["ci", "pull"]
assert len(gl.deploytokens.list(active=True, get_all=True)) == 2
refused(lambda: ga.deploytokens.list(), 403)

step("personal access tokens: list filters, get self, rotate")
assert [t.name for t in gl.personal_access_tokens.list(user_id=alice.id, state="active")] == ["alice-api"]
assert ga.personal_access_tokens.get("self").id == alice_pat.id
rotated = ga.personal_access_tokens.rotate("self")
assert rotated["token"] != alice_pat.token and rotated["active"] is True
refused(ga.auth, 401)
ga = gitlab.Gitlab(URL, private_token=rotated["token"])
ga.auth()
token = gl.personal_access_tokens.get(rotated["id"])
token.rotate()
assert token.token and token.token != rotated["token"]
refused(ga.auth, 401)
ga = gitlab.Gitlab(URL, private_token=token.token)
refused(lambda: gl.personal_access_tokens.rotate(rotated["id"]), 400, "revoked")

step("container registry")
push("acme/team/app", "v1", "root", ROOT_TOKEN)
push("acme/team/app/worker", "v1", "root", ROOT_TOKEN)
push("acme/team/app/worker", "v2", "root", ROOT_TOKEN)
repos = app.repositories.list(tags=True, tags_count=True, get_all=True)
assert sorted((r.path, r.tags_count) for r in repos) == [
    ("acme/team/app", 1),
    ("acme/team/app/worker", 2),
], [(r.path, r.tags_count) for r in repos]
worker = next(r for r in repos if r.path == "acme/team/app/worker")
# `tags` is also the name of the tag manager: the listed tags are in the attributes.
assert [t["name"] for t in worker.attributes["tags"]] == ["v1", "v2"]
assert {r.path for r in acme.registry_repositories.list(get_all=True)} == {"acme/team/app", "acme/team/app/worker"}
got = gl.registry_repositories.get(worker.id, size=True, tags_count="True")
assert got.size > 0 and got.tags_count == 2
assert [t.name for t in worker.tags.list(get_all=True)] == ["v1", "v2"]
tag = worker.tags.get("v2")
assert tag.location == f"{HOST}/acme/team/app/worker:v2" and tag.digest.startswith("sha256:")
worker.tags.delete("v1")
assert [t.name for t in worker.tags.list(get_all=True)] == ["v2"]
refused(lambda: ga.projects.get(app.id).repositories.list(tagz=True), 400, "tagz")

print("python-gitlab: every check passed", flush=True)
sys.exit(0)
