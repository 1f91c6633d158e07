-- The files of model versions, by the SHA-256 of their bytes (a safetensors file). Versions point
-- here through model_versions.content_sha256; a rollback reuses the same row.
CREATE TABLE model_content (
    content_sha256 TEXT PRIMARY KEY,
    bytes BYTEA NOT NULL
);
