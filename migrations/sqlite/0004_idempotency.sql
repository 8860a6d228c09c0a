CREATE TABLE idempotency_keys
(
    caller       text    NOT NULL,
    key          text    NOT NULL,
    request_hash text    NOT NULL,
    status       integer,
    body         blob,
    created_at   text    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (caller, key)
) STRICT;
