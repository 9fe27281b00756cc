-- OCI conformance: effective artifact types, and indexes that list absent manifests.

-- The referrers API lists an image manifest that declares no `artifactType` under its config's
-- media type, the plain image config types included (distribution-spec, "Listing Referrers"),
-- and its `artifactType` filter compares that value. Rows stored before kept NULL for such
-- manifests (and '' for a declared empty one). New rows get the value from
-- `oci::effective_artifact_type`; this applies the same rule to the rows stored before.
-- The payload is BYTEA holding UTF-8 JSON (the registry parsed it before storing it). PostgreSQL
-- refuses a \u0000 escape anywhere in a document it reads as JSON, so those escapes are
-- replaced first; the replacement keeps the JSON valid whether the backslash starts an escape
-- or ends an escaped backslash, and a media type cannot contain NUL anyway.
UPDATE manifests
SET artifact_type = replace(convert_from(payload, 'UTF8'), E'\\u0000', E'\\ufffd')::json
                    -> 'config' ->> 'mediaType'
WHERE media_type IN ('application/vnd.oci.image.manifest.v1+json',
                     'application/vnd.docker.distribution.manifest.v2+json')
  AND (artifact_type IS NULL OR artifact_type = '')
  AND json_typeof(replace(convert_from(payload, 'UTF8'), E'\\u0000', E'\\ufffd')::json
                  -> 'config' -> 'mediaType') = 'string'
  AND replace(convert_from(payload, 'UTF8'), E'\\u0000', E'\\ufffd')::json
      -> 'config' ->> 'mediaType' <> '';
-- An empty declared artifactType counts as missing; an index without one has none.
UPDATE manifests SET artifact_type = NULL WHERE artifact_type = '';

-- Manifests an index lists, kept by digest, for children the repository did not hold when the
-- reference was recorded: with `validation.manifests.indexes.platforms` set to `none` or
-- `list` an index may be pushed without some of its children (a mirror of some platforms),
-- and a child may be deleted while an index still lists it. `manifest_references` links the
-- children that existed, by id. "Which manifests does an index reference" — for usage and for
-- garbage collection — is both: the rows there, and the manifests matching
-- (repository_id, child_digest) here, which covers a child pushed after its index.
CREATE TABLE manifest_digest_references (
    parent_id     BIGINT NOT NULL REFERENCES manifests(id) ON DELETE CASCADE,
    repository_id BIGINT NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
    child_digest  TEXT   NOT NULL,
    PRIMARY KEY (parent_id, child_digest)
);
CREATE INDEX manifest_digest_references_by_child
    ON manifest_digest_references (repository_id, child_digest);
