-- Version 1: the calls and their transcripts. Ids compare byte-wise (COLLATE "C") so the page
-- order is the same as SQLite's.
CREATE TABLE calls (
    id             text COLLATE "C" PRIMARY KEY,
    started_at     double precision NOT NULL,
    answered_at    double precision,
    ended_at       double precision NOT NULL,
    duration_s     double precision NOT NULL,
    agent          text NOT NULL DEFAULT '',
    direction      text NOT NULL DEFAULT 'inbound',
    caller_number  text NOT NULL DEFAULT '',
    caller_name    text NOT NULL DEFAULT '',
    end_reason     text NOT NULL DEFAULT '',
    barge_ins      integer NOT NULL DEFAULT 0,
    turn_p50_ms    double precision,
    turn_p95_ms    double precision,
    turn_max_ms    double precision,
    cost_usd       double precision,
    recording_path text NOT NULL DEFAULT '',
    worker         text NOT NULL DEFAULT '',
    host           text NOT NULL DEFAULT '',
    turn_latency   jsonb NOT NULL DEFAULT '{}',
    quality        jsonb NOT NULL DEFAULT '{}',
    model          jsonb NOT NULL DEFAULT '{}',
    usage          jsonb NOT NULL DEFAULT '{}',
    tools          jsonb NOT NULL DEFAULT '[]'
);
CREATE INDEX calls_started ON calls (started_at, id);
CREATE INDEX calls_agent_started ON calls (agent, started_at, id);

CREATE TABLE transcript (
    call_id text COLLATE "C" NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    seq     integer NOT NULL,
    t       double precision,
    kind    text NOT NULL,
    text    text NOT NULL DEFAULT '',
    fields  jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (call_id, seq)
);
