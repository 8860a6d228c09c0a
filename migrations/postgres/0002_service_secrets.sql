-- Secrets the service generates for itself on first start (e.g. the key of principal-name
-- fingerprints). Never in an event, a log line or a projection.
CREATE TABLE service_secrets
(
    name       text        PRIMARY KEY,
    material   bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
