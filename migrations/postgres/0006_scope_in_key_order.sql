-- A scope's rows in key order straight from the index: long lists (a tenant's 100 000 users)
-- are read a page at a time, each page a range of this index after the previous page's last key.
DROP INDEX read_models_by_scope;
CREATE INDEX read_models_by_scope ON read_models (projection, kind, scope, row_key);

-- The replay table's twin (named by PostgreSQL, or by a replay that rebuilt it).
DO $$
DECLARE
    twin text;
BEGIN
    FOR twin IN
        SELECT x.indexrelid::regclass::text FROM pg_index AS x
         WHERE x.indrelid = 'read_models_replay'::regclass
           AND pg_get_indexdef(x.indexrelid) LIKE '%(projection, kind, scope)'
    LOOP
        EXECUTE 'DROP INDEX ' || twin;
    END LOOP;
END $$;
CREATE INDEX ON read_models_replay (projection, kind, scope, row_key);
