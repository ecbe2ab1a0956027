-- Version 5: outbound campaigns (#16): the campaigns, their contacts, every dial attempt (one
-- row per (campaign, contact, attempt): the claim that makes a second dial of it impossible),
-- the engines alive (their heartbeat), and the do-not-call list. Times are epoch seconds.
CREATE TABLE campaigns (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL DEFAULT '',
    agent           TEXT NOT NULL,
    state           TEXT NOT NULL DEFAULT 'draft',
    max_concurrent  INTEGER NOT NULL,
    rate_count      INTEGER NOT NULL,
    rate_window_s   REAL NOT NULL,
    settings        TEXT NOT NULL DEFAULT '{}',
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL
);

CREATE TABLE campaign_contacts (
    campaign_id  TEXT NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    seq          INTEGER NOT NULL,
    endpoint     TEXT NOT NULL,
    dnc_key      TEXT NOT NULL,
    timezone     TEXT NOT NULL DEFAULT '',
    variables    TEXT NOT NULL DEFAULT '{}',
    state        TEXT NOT NULL DEFAULT 'waiting',
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_at      REAL NOT NULL DEFAULT 0,
    last_outcome TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (campaign_id, seq)
);
CREATE INDEX campaign_contacts_due ON campaign_contacts (campaign_id, state, next_at);

CREATE TABLE campaign_attempts (
    campaign_id   TEXT NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    seq           INTEGER NOT NULL,
    attempt       INTEGER NOT NULL,
    worker        TEXT NOT NULL,
    claimed_at    REAL NOT NULL,
    originated_at REAL,
    ended_at      REAL,
    outcome       TEXT NOT NULL DEFAULT '',
    reason        TEXT NOT NULL DEFAULT '',
    channel_id    TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (campaign_id, seq, attempt)
);
CREATE INDEX campaign_attempts_live ON campaign_attempts (campaign_id, ended_at);
CREATE INDEX campaign_attempts_recent ON campaign_attempts (campaign_id, originated_at);
CREATE INDEX campaign_attempts_worker ON campaign_attempts (worker, ended_at);

CREATE TABLE campaign_engines (
    worker  TEXT PRIMARY KEY,
    seen_at REAL NOT NULL
);

CREATE TABLE dnc_numbers (
    dnc_key  TEXT PRIMARY KEY,
    number   TEXT NOT NULL,
    note     TEXT NOT NULL DEFAULT '',
    added_at REAL NOT NULL
);
