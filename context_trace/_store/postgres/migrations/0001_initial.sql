-- Version 1: the shared store. Turns are written once (their id is unique) and
-- never updated; the aggregates (sessions, users) are kept up to date by the
-- writer in the same transaction, counting only turns it really inserted.

CREATE TABLE turns (
    id text PRIMARY KEY,
    host text NOT NULL,
    user_id text,
    session_id text,
    started_at double precision NOT NULL,
    ended_at double precision NOT NULL,
    latency_ms double precision,
    model text,
    prompt_tokens bigint,
    completion_tokens bigint,
    total_tokens bigint,
    error text,
    metadata text NOT NULL,
    messages text NOT NULL,
    answered boolean NOT NULL,
    tool_error boolean NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX turns_session ON turns (session_id, started_at, id)
    WHERE session_id IS NOT NULL;
CREATE INDEX turns_user ON turns (user_id, started_at) WHERE user_id IS NOT NULL;
CREATE INDEX turns_started ON turns (started_at);

CREATE TABLE sessions (
    id text PRIMARY KEY,
    user_id text,
    started_at double precision NOT NULL,
    last_at double precision NOT NULL,
    turns bigint NOT NULL DEFAULT 0
);
CREATE INDEX sessions_user ON sessions (user_id, last_at) WHERE user_id IS NOT NULL;
CREATE INDEX sessions_last ON sessions (last_at);

CREATE TABLE users (
    id text PRIMARY KEY,
    first_seen double precision NOT NULL,
    last_seen double precision NOT NULL,
    turns bigint NOT NULL DEFAULT 0
);
CREATE INDEX users_last ON users (last_seen);

-- Ratings as they were given, on any host; which turn each one rates is
-- decided when it is read (rated_turns), so a rating may arrive before the
-- turn it rates.
CREATE TABLE ratings (
    id text PRIMARY KEY,
    host text NOT NULL,
    session_id text NOT NULL,
    conversation_id text,
    rating smallint NOT NULL,
    created_at double precision NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ratings_session ON ratings (session_id, created_at);

-- Each rating resolved to its turn (the named one, else the session's last
-- answered turn that ended by then), owned by the session's user, and only the
-- newest rating of a turn (by time given, then id).
CREATE VIEW rated_turns AS
SELECT DISTINCT ON (t.id)
    r.id, r.session_id, s.user_id, t.id AS conversation_id, r.rating, r.created_at
FROM ratings r
JOIN sessions s ON s.id = r.session_id
JOIN LATERAL (
    SELECT c.id FROM turns c
    WHERE c.session_id = r.session_id
      AND (CASE WHEN r.conversation_id IS NOT NULL THEN c.id = r.conversation_id
                ELSE c.answered AND c.ended_at <= r.created_at END)
    ORDER BY c.ended_at DESC, c.started_at DESC, c.id DESC
    LIMIT 1
) t ON true
ORDER BY t.id, r.created_at DESC, r.id DESC;
