-- The parts of an upload session. Every PATCH (or PUT with a body) writes its bytes to a
-- storage object of its own, `uploads/<upload id>/<object>`, and only once the body is
-- fully written and hashed does it try to append itself here, in the same transaction that
-- moves the session's offset (`uploads.size`) from the value it started at. A request that
-- loses that race deletes its own object and nothing else. Commit builds the blob from
-- exactly these rows, in `start_offset` order; storage is never listed to find parts.
-- Zero-length bodies are not recorded.
CREATE TABLE upload_parts (
    upload_id     TEXT   NOT NULL REFERENCES uploads(id) ON DELETE CASCADE,
    start_offset  BIGINT NOT NULL,
    size          BIGINT NOT NULL,
    object        TEXT   NOT NULL,
    PRIMARY KEY (upload_id, start_offset)
);

-- Sessions that already hold bytes were stored under the old part names (`uploads/<id>/0`,
-- `1`, …), which this version no longer trusts: end them. Their clients get 404
-- BLOB_UPLOAD_UNKNOWN and start over; the purge removes their leftover objects.
DELETE FROM uploads WHERE size > 0;
