-- Version 2: the order in which rows were committed, for readers that copy the
-- store incrementally (the dashboard's local cache, _store/postgres/cache.py).
-- Each row records the id of the transaction that inserted it. A reader takes
-- the rows whose transaction id lies below the oldest transaction still running
-- (pg_snapshot_xmin of its snapshot): those transactions are all finished, so no
-- row can appear there later, and a cursor on (txid, id) reads each row exactly
-- once. (A sequence column would not do: its values are taken in one order and
-- committed in another.) Rows stored before this version share the migrating
-- transaction's id, and the id tells them apart.

ALTER TABLE turns ADD COLUMN txid xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX turns_txid ON turns (txid, id);

ALTER TABLE ratings ADD COLUMN txid xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX ratings_txid ON ratings (txid, id);
