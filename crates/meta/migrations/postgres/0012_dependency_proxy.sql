-- Dependency proxy (pull-through cache) of top-level groups.

-- A top-level group's dependency proxy setting; no row means enabled (GitLab's default).
CREATE TABLE dependency_proxy_settings (
    namespace_id BIGINT NOT NULL PRIMARY KEY REFERENCES namespaces(id) ON DELETE CASCADE,
    enabled      BIGINT NOT NULL
);

-- The manifests a dependency proxy fetched from its upstream, by repository
-- (`<group>/dependency_proxy/containers/<image>`) and the reference pulled (a tag or a
-- digest): what is served to clients, when a tag was last confirmed upstream (ttl,
-- stale_if_error) and last pulled (cache cleanup). The manifest also becomes an ordinary
-- manifest of the repository once its blobs are cached, for usage, GC and the UI.
CREATE TABLE dependency_proxy_manifests (
    repository   TEXT   NOT NULL,
    reference    TEXT   NOT NULL,
    digest       TEXT   NOT NULL,
    media_type   TEXT   NOT NULL,
    payload      BYTEA    NOT NULL,
    validated_at BIGINT NOT NULL,
    last_used_at BIGINT NOT NULL,
    PRIMARY KEY (repository, reference)
);
CREATE INDEX dependency_proxy_manifests_by_use ON dependency_proxy_manifests (last_used_at);

-- Single flight across instances: the instance holding an unexpired lease on (repository,
-- blob) fetches it from the upstream; the others wait for it to be cached.
CREATE TABLE dependency_proxy_fetches (
    repository TEXT   NOT NULL,
    digest     TEXT   NOT NULL,
    holder     TEXT   NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (repository, digest)
);
