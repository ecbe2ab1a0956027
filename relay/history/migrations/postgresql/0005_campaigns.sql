-- Version 5: outbound campaigns (#16): the campaigns, their contacts, every dial attempt (one
-- row per (campaign, contact, attempt): the claim that makes a second dial of it impossible),
-- the engines alive (their heartbeat), and the do-not-call list. Times are epoch seconds.
CREATE TABLE campaigns (
    id              text PRIMARY KEY,
    name            text NOT NULL DEFAULT '',
    agent           text NOT NULL,
    state           text NOT NULL DEFAULT 'draft',
    max_concurrent  integer NOT NULL,
    rate_count      integer NOT NULL,
    rate_window_s   double precision NOT NULL,
    settings        jsonb NOT NULL DEFAULT '{}',
    created_at      double precision NOT NULL,
    updated_at      double precision NOT NULL
);

CREATE TABLE campaign_contacts (
    campaign_id  text NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    seq          integer NOT NULL,
    endpoint     text NOT NULL,
    dnc_key      text NOT NULL,
    timezone     text NOT NULL DEFAULT '',
    variables    jsonb NOT NULL DEFAULT '{}',
    state        text NOT NULL DEFAULT 'waiting',
    attempts     integer NOT NULL DEFAULT 0,
    next_at      double precision NOT NULL DEFAULT 0,
    last_outcome text NOT NULL DEFAULT '',
    PRIMARY KEY (campaign_id, seq)
);
CREATE INDEX campaign_contacts_due ON campaign_contacts (campaign_id, state, next_at);

CREATE TABLE campaign_attempts (
    campaign_id   text NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    seq           integer NOT NULL,
    attempt       integer NOT NULL,
    worker        text NOT NULL,
    claimed_at    double precision NOT NULL,
    originated_at double precision,
    ended_at      double precision,
    outcome       text NOT NULL DEFAULT '',
    reason        text NOT NULL DEFAULT '',
    channel_id    text NOT NULL DEFAULT '',
    PRIMARY KEY (campaign_id, seq, attempt)
);
CREATE INDEX campaign_attempts_live ON campaign_attempts (campaign_id, ended_at);
CREATE INDEX campaign_attempts_recent ON campaign_attempts (campaign_id, originated_at);
CREATE INDEX campaign_attempts_worker ON campaign_attempts (worker, ended_at);

CREATE TABLE campaign_engines (
    worker  text PRIMARY KEY,
    seen_at double precision NOT NULL
);

CREATE TABLE dnc_numbers (
    dnc_key  text PRIMARY KEY,
    number   text NOT NULL,
    note     text NOT NULL DEFAULT '',
    added_at double precision NOT NULL
);
