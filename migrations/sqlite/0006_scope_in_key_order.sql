-- A scope's rows in key order straight from the index: long lists (a tenant's 100 000 users)
-- are read a page at a time, each page a range of this index after the previous page's last key.
DROP INDEX read_models_by_scope;
CREATE INDEX read_models_by_scope ON read_models (projection, kind, scope, row_key);
DROP INDEX read_models_replay_by_scope;
CREATE INDEX read_models_replay_by_scope ON read_models_replay (projection, kind, scope, row_key);
