-- Bearer tokens, stored only as SHA-256 hashes (a token is 256 random bits, so a plain hash
-- suffices), each scoped to a role and, where the role needs it, a reseller or a tenant.
CREATE TABLE api_tokens
(
    token_id    uuid        PRIMARY KEY,
    token_hash  text        NOT NULL UNIQUE,
    role        text        NOT NULL,
    reseller_id uuid,
    tenant_id   uuid,
    created_at  timestamptz NOT NULL DEFAULT now()
);
