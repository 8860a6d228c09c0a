CREATE TABLE api_tokens
(
    token_id    text PRIMARY KEY,
    token_hash  text NOT NULL UNIQUE,
    role        text NOT NULL,
    reseller_id text,
    tenant_id   text,
    created_at  text NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
) STRICT;
