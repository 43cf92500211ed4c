"""The PostgreSQL side of a run: the entity table, the change trigger and the per-run reset.

Every write is ``UPDATE ... SET version = version + 1 ... RETURNING version``, so the versions of
one entity grow by exactly 1 per committed write. A deferred constraint trigger sends a NOTIFY on
the ``cachestorm`` channel for each changed row. Being deferred, it runs at commit time, so the
``commit_ns`` it stamps is as close to the commit as PostgreSQL lets a trigger see, and NOTIFY
itself is only delivered once the transaction has committed.
"""

from __future__ import annotations

from typing import Any

CHANNEL = "cachestorm"
TABLE = "cachestorm_entity"
KEY_PREFIX = "cs:e:"


def entity_key(entity_id: int) -> str:
    """The Redis key, and the history ``key``, of entity ``entity_id``."""
    return f"{KEY_PREFIX}{entity_id}"


def entity_id(key: str) -> int:
    """Inverse of :func:`entity_key`."""
    return int(key[len(KEY_PREFIX) :])


DDL = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    id         bigint PRIMARY KEY,
    version    bigint NOT NULL DEFAULT 0,
    payload    text   NOT NULL DEFAULT '',
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE OR REPLACE FUNCTION cachestorm_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{CHANNEL}', json_build_object(
        'key', '{KEY_PREFIX}' || NEW.id,
        'version', NEW.version,
        'commit_ns', (extract(epoch FROM clock_timestamp()) * 1000000)::bigint * 1000
    )::text);
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS cachestorm_notify_on_commit ON {TABLE};
CREATE CONSTRAINT TRIGGER cachestorm_notify_on_commit
    AFTER INSERT OR UPDATE ON {TABLE}
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION cachestorm_notify();
"""

# The reset runs with the trigger disabled so that a run's start does not flood the notifier
# with thousands of version-0 notifications.
RESET = (
    f"ALTER TABLE {TABLE} DISABLE TRIGGER cachestorm_notify_on_commit",
    f"TRUNCATE {TABLE}",
    f"INSERT INTO {TABLE} (id, version, payload, updated_at)"
    " SELECT g, 0, 'v0', now() FROM generate_series(0, %(keys)s - 1) AS g",
    f"ALTER TABLE {TABLE} ENABLE TRIGGER cachestorm_notify_on_commit",
)

WRITE = (
    f"UPDATE {TABLE} SET version = version + 1, payload = %s, updated_at = now()"
    " WHERE id = %s RETURNING version"
)
READ = f"SELECT version, payload FROM {TABLE} WHERE id = %s"
READ_ALL_VERSIONS = f"SELECT id, version FROM {TABLE} ORDER BY id"


def install(conn: Any) -> None:
    """Create the table and trigger if missing. ``conn`` is an autocommit psycopg connection."""
    conn.execute("SELECT pg_advisory_lock(4242)")
    try:
        conn.execute(DDL)
    finally:
        conn.execute("SELECT pg_advisory_unlock(4242)")


def reset(conn: Any, keys: int) -> None:
    """Put every entity 0..keys-1 at version 0 and drop the rest."""
    with conn.transaction():
        for statement in RESET:
            conn.execute(statement, {"keys": keys} if "%(keys)s" in statement else None)
