"""Numbered schema migrations of the catalog, applied in order at start; never edit one that has shipped."""

from __future__ import annotations

INITIAL = """
CREATE SEQUENCE classes_id_seq START 1;
CREATE TABLE counters (name VARCHAR PRIMARY KEY, value BIGINT NOT NULL);
INSERT INTO counters VALUES ('images', 0);

CREATE TABLE users (
    id VARCHAR PRIMARY KEY,
    username VARCHAR NOT NULL UNIQUE,
    password_hash VARCHAR NOT NULL,
    is_admin BOOLEAN NOT NULL DEFAULT FALSE,
    quota_bytes BIGINT,
    created_at TIMESTAMP NOT NULL
);

CREATE TABLE tokens (
    id VARCHAR PRIMARY KEY,
    user_id VARCHAR NOT NULL,
    name VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,            -- session | api | service
    token_hash VARCHAR NOT NULL UNIQUE,
    hint VARCHAR NOT NULL,            -- first characters of the secret, to recognise it in a list
    created_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP,
    last_used_at TIMESTAMP,
    revoked_at TIMESTAMP
);

CREATE TABLE models (
    id VARCHAR PRIMARY KEY,
    owner_id VARCHAR NOT NULL,
    name VARCHAR NOT NULL,
    description VARCHAR NOT NULL DEFAULT '',
    target_accuracy DOUBLE,
    time_budget_s INTEGER NOT NULL,
    active_version INTEGER,
    preprocessing JSON,
    sample_sha256 VARCHAR,
    options JSON,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);

CREATE TABLE classes (
    id BIGINT PRIMARY KEY DEFAULT nextval('classes_id_seq'),
    model_id VARCHAR NOT NULL,
    name VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL,
    UNIQUE (model_id, name)
);

CREATE TABLE images (
    id BIGINT PRIMARY KEY,           -- allocated in blocks from counters ('images')
    model_id VARCHAR NOT NULL,
    class_id BIGINT,                  -- NULL for rejects
    label VARCHAR NOT NULL,           -- the class name as given (kept for rejects)
    split VARCHAR,                    -- train | test (NULL for rejects)
    status VARCHAR NOT NULL,          -- accepted | rejected
    reject_reason VARCHAR,
    original_name VARCHAR NOT NULL,
    sha256 VARCHAR,
    size_bytes BIGINT NOT NULL,
    width INTEGER,
    height INTEGER,
    mode VARCHAR,
    format VARCHAR,
    is_gray BOOLEAN,
    job_id VARCHAR,
    created_at TIMESTAMP NOT NULL
);

CREATE TABLE blobs (
    sha256 VARCHAR PRIMARY KEY,       -- content address of a picture
    pack VARCHAR NOT NULL,            -- key of the pack file in the blob store
    pack_offset BIGINT NOT NULL,
    length BIGINT NOT NULL,
    created_at TIMESTAMP NOT NULL
);

CREATE TABLE jobs (
    id VARCHAR PRIMARY KEY,
    owner_id VARCHAR NOT NULL,
    model_id VARCHAR,
    kind VARCHAR NOT NULL,            -- import | ...
    status VARCHAR NOT NULL,          -- queued | running | succeeded | failed | interrupted | cancelled
    progress_done BIGINT NOT NULL DEFAULT 0,
    progress_total BIGINT NOT NULL DEFAULT 0,
    message VARCHAR NOT NULL DEFAULT '',
    params JSON,
    result JSON,
    error JSON,
    created_at TIMESTAMP NOT NULL,
    started_at TIMESTAMP,
    finished_at TIMESTAMP,
    updated_at TIMESTAMP NOT NULL
);

CREATE TABLE model_versions (
    model_id VARCHAR NOT NULL,
    version INTEGER NOT NULL,
    source VARCHAR NOT NULL,          -- training | expansion | rollback
    run_id VARCHAR,
    classes JSON NOT NULL,
    backbone VARCHAR,
    preprocessing JSON,
    artifact_uri VARCHAR,
    metrics JSON,
    status VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (model_id, version)
);

CREATE TABLE training_runs (
    id VARCHAR PRIMARY KEY,
    model_id VARCHAR NOT NULL,
    owner_id VARCHAR NOT NULL,
    status VARCHAR NOT NULL,          -- queued | running | succeeded | failed | cancelled | interrupted
    config JSON,                      -- what the user chose (advanced options), with defaults filled in
    progress JSON,                    -- stage, fraction, message, best accuracy so far, seconds left
    result JSON,
    error JSON,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    ray_job_id VARCHAR,
    created_at TIMESTAMP NOT NULL,
    started_at TIMESTAMP,
    finished_at TIMESTAMP,
    updated_at TIMESTAMP NOT NULL
);

CREATE TABLE run_images (             -- the dataset snapshot a run trains on: changes after it do not touch it
    run_id VARCHAR NOT NULL,
    image_id BIGINT NOT NULL,
    label VARCHAR NOT NULL,
    split VARCHAR NOT NULL,
    sha256 VARCHAR NOT NULL
);

CREATE TABLE trials (
    run_id VARCHAR NOT NULL,
    trial_id VARCHAR NOT NULL,
    spec JSON NOT NULL,
    status VARCHAR NOT NULL,
    epochs INTEGER NOT NULL DEFAULT 0,
    metrics JSON,
    cost_s DOUBLE,
    stop_reason VARCHAR,
    PRIMARY KEY (run_id, trial_id)
);

CREATE TABLE tasks (
    id VARCHAR PRIMARY KEY,
    owner_id VARCHAR NOT NULL,
    model_id VARCHAR NOT NULL,
    version INTEGER NOT NULL,
    label VARCHAR,
    confidence DOUBLE,
    uncertain BOOLEAN,
    top JSON,
    latency_ms DOUBLE,
    image_sha256 VARCHAR,
    created_at TIMESTAMP NOT NULL
);

CREATE TABLE feedback (
    task_id VARCHAR PRIMARY KEY,
    correct BOOLEAN NOT NULL,
    label VARCHAR,
    added_image_id BIGINT,
    created_at TIMESTAMP NOT NULL
);
"""

MIGRATIONS: tuple[tuple[int, str, str], ...] = ((1, "initial", INITIAL),)
