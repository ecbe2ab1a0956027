-- Version 1: the calls and their transcripts. JSON parts are stored as JSON text.
CREATE TABLE calls (
    id             TEXT PRIMARY KEY,
    started_at     REAL NOT NULL,
    answered_at    REAL,
    ended_at       REAL NOT NULL,
    duration_s     REAL NOT NULL,
    agent          TEXT NOT NULL DEFAULT '',
    direction      TEXT NOT NULL DEFAULT 'inbound',
    caller_number  TEXT NOT NULL DEFAULT '',
    caller_name    TEXT NOT NULL DEFAULT '',
    end_reason     TEXT NOT NULL DEFAULT '',
    barge_ins      INTEGER NOT NULL DEFAULT 0,
    turn_p50_ms    REAL,
    turn_p95_ms    REAL,
    turn_max_ms    REAL,
    cost_usd       REAL,
    recording_path TEXT NOT NULL DEFAULT '',
    worker         TEXT NOT NULL DEFAULT '',
    host           TEXT NOT NULL DEFAULT '',
    turn_latency   TEXT NOT NULL DEFAULT '{}',
    quality        TEXT NOT NULL DEFAULT '{}',
    model          TEXT NOT NULL DEFAULT '{}',
    usage          TEXT NOT NULL DEFAULT '{}',
    tools          TEXT NOT NULL DEFAULT '[]'
);
-- newest first, by date range; and the same per agent
CREATE INDEX calls_started ON calls (started_at, id);
CREATE INDEX calls_agent_started ON calls (agent, started_at, id);

CREATE TABLE transcript (
    call_id TEXT NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    seq     INTEGER NOT NULL,
    t       REAL,
    kind    TEXT NOT NULL,
    text    TEXT NOT NULL DEFAULT '',
    fields  TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (call_id, seq)
);
