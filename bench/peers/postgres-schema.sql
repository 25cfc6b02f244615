-- "PostgreSQL plus an audit trigger": what a team builds when it wants Kimberlite's
-- guarantees out of PostgreSQL. Every insert and update of an audited table is copied into
-- `audit_log` with SHA-256 (pgcrypto) over the previous entry's hash and the new row, and
-- gets a dense position from the chain, like a record of a Kimberlite tenant log. Updated
-- rows keep their old versions in a history table so that a point-in-time query ("AS OF
-- POSITION p") is one indexed lookup, as in Kimberlite's versioned view store.

CREATE EXTENSION IF NOT EXISTS pgcrypto;

-- The head of the chain, one row. The trigger locks it (FOR UPDATE) until the transaction
-- commits: a linear chain needs a total order of writers, and this lock is that order.
CREATE TABLE audit_head (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    position  BIGINT NOT NULL,
    hash      BYTEA  NOT NULL
);
INSERT INTO audit_head VALUES (TRUE, 0, '\x0000000000000000000000000000000000000000000000000000000000000000');

CREATE TABLE audit_log (
    position   BIGINT PRIMARY KEY,
    at         TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    principal  TEXT  NOT NULL DEFAULT current_user,
    table_name TEXT  NOT NULL,
    operation  TEXT  NOT NULL,
    row_data   BYTEA NOT NULL,
    prev_hash  BYTEA NOT NULL,
    hash       BYTEA NOT NULL
);

-- BEFORE INSERT OR UPDATE on every audited table (which has a `position` column): assigns
-- the next position and appends the chained audit entry.
CREATE FUNCTION audit_chain() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    head audit_head%ROWTYPE;
    data BYTEA;
    next_hash BYTEA;
BEGIN
    SELECT * INTO head FROM audit_head WHERE singleton FOR UPDATE;
    NEW.position := head.position + 1;
    data := convert_to(row_to_json(NEW)::text, 'UTF8');
    next_hash := digest(head.hash || data, 'sha256');
    INSERT INTO audit_log (position, table_name, operation, row_data, prev_hash, hash)
        VALUES (NEW.position, TG_TABLE_NAME, TG_OP, data, head.hash, next_hash);
    UPDATE audit_head SET position = NEW.position, hash = next_hash WHERE singleton;
    RETURN NEW;
END $$;

-- BEFORE UPDATE, after audit_chain (triggers fire in name order): keeps the old version
-- with the range of positions [position, valid_to) in which it was current.
CREATE FUNCTION keep_history() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO items_history (id, body, position, valid_to)
        VALUES (OLD.id, OLD.body, OLD.position, NEW.position);
    RETURN NEW;
END $$;

-- The append workload: application events, 256-byte payloads.
CREATE TABLE events (
    position   BIGINT PRIMARY KEY,
    stream     TEXT  NOT NULL,
    event_type TEXT  NOT NULL,
    payload    BYTEA NOT NULL
);
CREATE TRIGGER a_audit BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION audit_chain();

-- The SQL INSERT workload: rows about 256 bytes wide, as in Kimberlite's `events` table.
CREATE TABLE records (
    id       BIGINT PRIMARY KEY,
    body     TEXT   NOT NULL,
    position BIGINT NOT NULL
);
CREATE TRIGGER a_audit BEFORE INSERT ON records FOR EACH ROW EXECUTE FUNCTION audit_chain();

-- The point-in-time workload: rows with versions.
CREATE TABLE items (
    id       BIGINT PRIMARY KEY,
    body     TEXT   NOT NULL,
    position BIGINT NOT NULL
);
CREATE TABLE items_history (
    id       BIGINT NOT NULL,
    body     TEXT   NOT NULL,
    position BIGINT NOT NULL,
    valid_to BIGINT NOT NULL,
    PRIMARY KEY (id, position)
);
CREATE TRIGGER a_audit BEFORE INSERT OR UPDATE ON items FOR EACH ROW EXECUTE FUNCTION audit_chain();
CREATE TRIGGER b_history BEFORE UPDATE ON items FOR EACH ROW EXECUTE FUNCTION keep_history();
