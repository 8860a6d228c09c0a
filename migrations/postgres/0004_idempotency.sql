-- Responses of POSTs sent with an Idempotency-Key, per caller, so a retry returns the first
-- response and writes nothing new. `status` is NULL while the first request is running.
CREATE TABLE idempotency_keys
(
    caller       text        NOT NULL,
    key          text        NOT NULL,
    request_hash text        NOT NULL,
    status       integer,
    body         bytea,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (caller, key)
);
