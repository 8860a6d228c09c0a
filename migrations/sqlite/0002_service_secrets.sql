CREATE TABLE service_secrets
(
    name       text PRIMARY KEY,
    material   blob NOT NULL,
    created_at text NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
) STRICT;
