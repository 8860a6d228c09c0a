-- Snapshots are written and read only by the service, which encodes them itself.
--
-- As `json`, PostgreSQL parsed every snapshot to validate it and compressed it with pglz: half a
-- second of a backend for a 100 000-user tenant's 22–29 MB (measured: 450–500 ms; as text with
-- lz4, 43 ms), while that tenant's commands waited for the same two cores.
ALTER TABLE snapshots ALTER COLUMN payload TYPE text;

-- lz4 where the server was built with it (PostgreSQL's own packages and images are); pglz
-- otherwise.
DO $$
BEGIN
    ALTER TABLE snapshots ALTER COLUMN payload SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'this server has no lz4: snapshots stay compressed with pglz';
END
$$;

-- A snapshot is stored in parts (its JSON text cut into pieces of at most a quarter megabyte,
-- in order), so that it can be written and read as a stream: whole, each write or load held it
-- several times over in the service's memory (one protocol message per row).
ALTER TABLE snapshots ADD COLUMN part integer NOT NULL DEFAULT 0 CHECK (part >= 0);
ALTER TABLE snapshots DROP CONSTRAINT snapshots_pkey;
ALTER TABLE snapshots ADD PRIMARY KEY (aggregate_type, aggregate_id, last_sequence, part);
