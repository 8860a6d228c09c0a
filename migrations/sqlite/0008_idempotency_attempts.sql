-- Stored answers kept secrets and personal data in clear text (a token, a temporary password, a
-- user's names): none of those may stay. From now on secrets are never stored, personal data is
-- sealed under the user's key, and answers expire.
DELETE FROM idempotency_keys;

-- Each run of a keyed request is an attempt: its id goes into the metadata of every event the
-- run writes, and `log_start` is the log's end when it began, so that after an answer was lost
-- (a 5xx, a crash) a retry can look for the attempt's events past that point instead of
-- running the command a second time.
ALTER TABLE idempotency_keys ADD COLUMN attempt text NOT NULL DEFAULT '';
ALTER TABLE idempotency_keys ADD COLUMN log_start integer NOT NULL DEFAULT 0;
ALTER TABLE idempotency_keys ADD COLUMN unsettled integer NOT NULL DEFAULT 0;

CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
