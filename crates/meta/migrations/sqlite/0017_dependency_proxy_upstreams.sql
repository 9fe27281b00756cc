-- Dependency proxy: a top-level group's own upstreams and its cache cleanup (ttl_policy).

-- GitLab's ttl_policy: cached manifests not pulled for ttl_days are removed (enabled, 90
-- days, unless the group says otherwise).
ALTER TABLE dependency_proxy_settings ADD COLUMN ttl_enabled BIGINT NOT NULL DEFAULT 1;
ALTER TABLE dependency_proxy_settings ADD COLUMN ttl_days BIGINT NOT NULL DEFAULT 90;

-- The upstreams a top-level group pulls from instead of the instance's, tried in position
-- order. The password is sealed (AES-256-GCM, key from dependency_proxy.encryption_key or
-- the instance's token signing key) and never leaves the server.
CREATE TABLE dependency_proxy_upstreams (
    namespace_id    BIGINT NOT NULL REFERENCES namespaces(id) ON DELETE CASCADE,
    position        BIGINT NOT NULL,
    url             TEXT   NOT NULL,
    username        TEXT,
    sealed_password BLOB,
    PRIMARY KEY (namespace_id, position)
);
