"""Per-key versions for an existing PostgreSQL table that has none, kept by a trigger.

cachestorm's checks need, per key, a version that grows by exactly 1 per committed write. A
target whose table has no such column gets one here without any change to the application's code:
:func:`install` adds a ``bigint`` column and a ``BEFORE INSERT OR UPDATE`` row trigger that owns
it. The application's own statements never mention the column; the trigger sets it on every row
they insert or update, and overrides any value they try to put there.

What counts as a write: every committed transaction that inserts or updates the row, exactly once,
whatever the values and however many statements of that transaction touched the row. An UPDATE
that changes nothing still counts because the application treats it as a write (it will
invalidate or refill the cache after it); a cache that keeps serving the pre-write entry has missed
an invalidation, which is the bug under test even when the bytes happen to be equal. Counting once
per transaction, not per statement, keeps versions dense: an intermediate version that no other
session could ever see would otherwise leave a gap.

An INSERT sets version 1: the row did not exist (version 0 of an absent key: nothing committed)
and one write has committed. Rows present when the column is added, and every row after
:func:`reset`, are at 0.

Usage from the command line::

    python -m cachestorm.pg_versions install|status|uninstall --dsn DSN --table T --key-column ID

See docs/targets.md, section "Versions for a table that has none".
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from cachestorm.services import ServiceError, redact

DEFAULT_COLUMN = "cs_version"
# Transaction-local switch that makes the trigger stand aside, for :func:`reset` only.
# Not a security boundary: any session may set it, just as any session may run DDL it is allowed to.
RESETTING = "cachestorm.resetting"
# The comment that marks a column as cachestorm's, so that a column of the same name that belongs
# to the application is never adopted or dropped.
MARKER = "cachestorm version column; remove with: python -m cachestorm.pg_versions uninstall"
NAME_PREFIX = "cachestorm_version_"
MAX_IDENTIFIER = 63
LOCK_TIMEOUT = "10s"

# The function body. ``{col}`` is the quoted column name. The row version being replaced (OLD) was
# written by this same transaction when its xmin is this transaction or one of its subtransactions
# (a released savepoint); that transaction's write is already counted. A concurrent transaction's
# uncommitted row version can never be OLD (this UPDATE would have waited for it), so "in progress"
# here means "ours". xmin is a 32-bit xid: it is widened to the current epoch by the nearest
# distance either way, since a subtransaction's xid is newer than its top-level one.
_BODY = """
DECLARE
    x bigint;
    cur bigint;
    d bigint;
BEGIN
    IF TG_OP = 'INSERT' THEN
        NEW.{col} := 1;
        RETURN NEW;
    END IF;
    x := OLD.xmin::text::bigint;
    cur := pg_catalog.pg_current_xact_id()::text::bigint;
    d := ((x - cur % 4294967296) % 4294967296 + 4294967296) % 4294967296;
    IF d >= 2147483648 THEN
        d := d - 4294967296;
    END IF;
    -- xids below 3 are the frozen and bootstrap ones: written long ago, never by us.
    IF x >= 3 AND cur + d > 0
       AND pg_catalog.pg_xact_status((cur + d)::text::pg_catalog.xid8) = 'in progress' THEN
        NEW.{col} := OLD.{col};
    ELSE
        NEW.{col} := OLD.{col} + 1;
    END IF;
    RETURN NEW;
END
"""


class VersionsError(Exception):
    """Bad input or an unusable table. ``str()`` is one line: what, what is wrong, what to do."""


@dataclass(frozen=True)
class Table:
    """A table resolved in the catalog: its oid and its schema and name as stored."""

    oid: int
    schema: str
    name: str

    @property
    def ident(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)

    @property
    def display(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def object_name(self) -> str:
        """The function's and the trigger's name; hashed when the table's name is too long for it."""
        name = NAME_PREFIX + self.name
        if len(name.encode()) <= MAX_IDENTIFIER:
            return name
        digest = hashlib.sha1(self.name.encode()).hexdigest()[:8]
        head = name.encode()[: MAX_IDENTIFIER - 9].decode(errors="ignore")
        return f"{head}_{digest}"

    @property
    def function(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.object_name)


@dataclass(frozen=True)
class Status:
    """What of an installation is present on a table."""

    table: str
    column: str | None
    function: bool
    trigger: bool

    @property
    def installed(self) -> bool:
        return self.column is not None and self.function and self.trigger

    @property
    def partial(self) -> bool:
        return not self.installed and (self.column is not None or self.function or self.trigger)


# --------------------------------------------------------------------------------------------
# Catalog look-ups
# --------------------------------------------------------------------------------------------


def resolve(conn: Any, table: str) -> Table:
    """``table`` as written in SQL (``users``, ``app.users``, ``"My Table"``), found in the catalog."""
    if not table.strip():
        raise VersionsError("--table is empty: give the table's name, e.g. users or app.users.")
    try:
        with conn.transaction():
            row = conn.execute(
                "SELECT c.oid::bigint, n.nspname, c.relname, c.relkind FROM pg_catalog.pg_class c"
                " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
                " WHERE c.oid = pg_catalog.to_regclass(%s)",
                (table,),
            ).fetchone()
    except psycopg.Error as exc:
        raise VersionsError(
            f"table {table!r} is not a valid name ({_one_line(exc)}): write it as in SQL, e.g. app.users."
        ) from exc
    if row is None:
        raise VersionsError(
            f"table {table!r} does not exist (or is not on the search_path): "
            "check the name, qualify it with its schema, or connect to the right database."
        )
    oid, schema, name, kind = row
    if kind not in ("r", "p"):
        raise VersionsError(f"{schema}.{name} is not a table: give the table the application writes to.")
    return Table(oid, schema, name)


def _columns(conn: Any, table: Table) -> dict[str, str | None]:
    """Every live column of ``table`` with its comment."""
    rows = conn.execute(
        "SELECT attname, pg_catalog.col_description(attrelid, attnum) FROM pg_catalog.pg_attribute"
        " WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped",
        (table.oid,),
    ).fetchall()
    return {name: comment for name, comment in rows}


def _ours(columns: dict[str, str | None]) -> str | None:
    return next((name for name, comment in columns.items() if comment == MARKER), None)


def _function_source(conn: Any, table: Table) -> str | None:
    row = conn.execute(
        "SELECT p.prosrc FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace"
        " WHERE n.nspname = %s AND p.proname = %s AND p.pronargs = 0",
        (table.schema, table.object_name),
    ).fetchone()
    return None if row is None else str(row[0])


def _has_trigger(conn: Any, table: Table) -> bool:
    row = conn.execute(
        "SELECT 1 FROM pg_catalog.pg_trigger WHERE tgrelid = %s AND tgname = %s",
        (table.oid, table.object_name),
    ).fetchone()
    return row is not None


def _check_key_column(conn: Any, table: Table, key_column: str, columns: dict[str, str | None]) -> None:
    if key_column not in columns:
        raise VersionsError(
            f"{table.display} has no column {key_column!r} for --key-column "
            f"(its columns: {', '.join(sorted(columns))}): give the column that identifies a cached entry."
        )
    # read_versions() returns one version per key, which only means something if keys are unique.
    row = conn.execute(
        "SELECT 1 FROM pg_catalog.pg_index i JOIN pg_catalog.pg_attribute a"
        " ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]"
        " WHERE i.indrelid = %s AND i.indisunique AND i.indnkeyatts = 1 AND i.indpred IS NULL"
        " AND a.attname = %s",
        (table.oid, key_column),
    ).fetchone()
    if row is None:
        raise VersionsError(
            f"{table.display}.{key_column} is not unique (no primary key or unique index on it alone): "
            "give a --key-column that identifies one row."
        )


def _check_column_name(column: str) -> None:
    if not column or len(column.encode()) > MAX_IDENTIFIER:
        raise VersionsError(
            f"--column {column!r} is not a usable column name: give 1 to {MAX_IDENTIFIER} bytes, "
            f"e.g. {DEFAULT_COLUMN}."
        )


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _connect_reason(exc: BaseException) -> str:
    # libpq: 'connection failed: connection to server at "h", port p failed: why. Is the server...'
    text = re.sub(r"^.*\bfailed: (?:FATAL: +)?", "", _one_line(exc))
    return text.replace(" Is the server running on that host and accepting TCP/IP connections?", "")


# --------------------------------------------------------------------------------------------
# The API
# --------------------------------------------------------------------------------------------


def status(conn: Any, table: str) -> Status:
    """Which parts of an installation (column, function, trigger) ``table`` has."""
    t = resolve(conn, table)
    with conn.transaction():
        return Status(
            table=t.display,
            column=_ours(_columns(conn, t)),
            function=_function_source(conn, t) is not None,
            trigger=_has_trigger(conn, t),
        )


def install(conn: Any, table: str, *, key_column: str, column: str = DEFAULT_COLUMN) -> list[str]:
    """Add the version column and its trigger to ``table``; return what was done, one line each.

    Runs in one transaction: either all of it is in place afterwards or nothing changed. Running
    it again does nothing, and completes an installation someone has partly removed.
    """
    _check_column_name(column)
    t = resolve(conn, table)
    done: list[str] = []
    col = sql.Identifier(column)
    try:
        with conn.transaction():
            # ALTER TABLE needs an exclusive lock; behind a long transaction it would queue every
            # other statement on the table behind itself, so give up instead of stalling the target.
            conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(LOCK_TIMEOUT)))
            conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(t.ident))
            columns = _columns(conn, t)
            _check_key_column(conn, t, key_column, columns)
            ours = _ours(columns)
            if ours is not None and ours != column:
                raise VersionsError(
                    f"{t.display} already has cachestorm's version column {ours!r}: "
                    f"pass --column {ours}, or uninstall it first."
                )
            if ours is None:
                if column in columns:
                    raise VersionsError(
                        f"{t.display} already has a column {column!r} that is not cachestorm's: "
                        "pick another --column name."
                    )
                # A constant default is stored in the catalog: no rewrite of existing rows.
                conn.execute(
                    sql.SQL("ALTER TABLE {} ADD COLUMN {} bigint NOT NULL DEFAULT 0").format(t.ident, col)
                )
                conn.execute(
                    sql.SQL("COMMENT ON COLUMN {}.{} IS {}").format(t.ident, col, sql.Literal(MARKER))
                )
                done.append(f"added column {column} bigint NOT NULL DEFAULT 0 (existing rows at version 0)")
            body = _BODY.format(col=col.as_string(conn))
            source = _function_source(conn, t)
            if source != body:
                conn.execute(
                    sql.SQL(
                        "CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql"
                        " SET search_path = pg_catalog AS {}"
                    ).format(t.function, sql.Literal(body))
                )
                verb = "created" if source is None else "replaced"
                done.append(f"{verb} function {t.schema}.{t.object_name}()")
            if not _has_trigger(conn, t):
                conn.execute(
                    sql.SQL(
                        "CREATE TRIGGER {} BEFORE INSERT OR UPDATE ON {} FOR EACH ROW"
                        " WHEN (pg_catalog.current_setting({}, true) IS DISTINCT FROM 'on')"
                        " EXECUTE FUNCTION {}()"
                    ).format(sql.Identifier(t.object_name), t.ident, sql.Literal(RESETTING), t.function)
                )
                done.append(
                    f"created trigger {t.object_name} BEFORE INSERT OR UPDATE ON {t.display} FOR EACH ROW"
                )
    except psycopg.errors.LockNotAvailable as exc:
        raise VersionsError(
            f"{t.display} stayed locked by other sessions for {LOCK_TIMEOUT}: "
            "retry when long transactions on it have finished."
        ) from exc
    except psycopg.errors.InsufficientPrivilege as exc:
        raise VersionsError(
            f"not allowed to change {t.display} ({_one_line(exc)}): "
            f"connect as the table's owner, with CREATE on schema {t.schema} (for the function)."
        ) from exc
    return done


def uninstall(conn: Any, table: str, column: str = DEFAULT_COLUMN) -> list[str]:
    """Drop the trigger, the function and the column; return what was done, one line each."""
    _check_column_name(column)
    t = resolve(conn, table)
    done: list[str] = []
    try:
        with conn.transaction():
            conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(LOCK_TIMEOUT)))
            conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(t.ident))
            columns = _columns(conn, t)
            ours = _ours(columns)
            if ours is not None and ours != column:
                raise VersionsError(
                    f"cachestorm's version column on {t.display} is {ours!r}, not {column!r}: "
                    f"pass --column {ours}."
                )
            if ours is None and column in columns:
                raise VersionsError(
                    f"column {column!r} of {t.display} is not cachestorm's (no marker comment): "
                    "it was left alone; drop it yourself if it really is."
                )
            if _has_trigger(conn, t):
                conn.execute(sql.SQL("DROP TRIGGER {} ON {}").format(sql.Identifier(t.object_name), t.ident))
                done.append(f"dropped trigger {t.object_name} on {t.display}")
            if _function_source(conn, t) is not None:
                conn.execute(sql.SQL("DROP FUNCTION {}()").format(t.function))
                done.append(f"dropped function {t.schema}.{t.object_name}()")
            if ours is not None:
                conn.execute(sql.SQL("ALTER TABLE {} DROP COLUMN {}").format(t.ident, sql.Identifier(ours)))
                done.append(f"dropped column {ours}")
    except psycopg.errors.DependentObjectsStillExist as exc:
        raise VersionsError(
            f"{t.display}.{column} is used by other objects ({_one_line(exc)}): drop or change those first."
        ) from exc
    except psycopg.errors.LockNotAvailable as exc:
        raise VersionsError(
            f"{t.display} stayed locked by other sessions for {LOCK_TIMEOUT}: "
            "retry when long transactions on it have finished."
        ) from exc
    except psycopg.errors.InsufficientPrivilege as exc:
        raise VersionsError(
            f"not allowed to change {t.display} ({_one_line(exc)}): connect as the table's owner."
        ) from exc
    return done


def reset(conn: Any, table: str, column: str = DEFAULT_COLUMN) -> int:
    """Put every row of ``table`` at version 0 without the trigger counting it; return rows changed."""
    t = resolve(conn, table)
    col = sql.Identifier(column)
    with conn.transaction():
        conn.execute("SELECT pg_catalog.set_config(%s, 'on', true)", (RESETTING,))
        cur = conn.execute(sql.SQL("UPDATE {} SET {} = 0 WHERE {} <> 0").format(t.ident, col, col))
        # Switched off again rather than left to the transaction's end: when the caller's
        # transaction is still open (this block was only a savepoint), its later writes must count.
        conn.execute("SELECT pg_catalog.set_config(%s, '', true)", (RESETTING,))
        return int(cur.rowcount)


def read_versions(
    conn: Any,
    table: str,
    key_column: str,
    column: str = DEFAULT_COLUMN,
    keys: Iterable[Any] | None = None,
) -> dict[Any, int]:
    """``{key: version}`` of every row, or of the rows whose key is in ``keys``."""
    t = resolve(conn, table)
    query = sql.SQL("SELECT {}, {} FROM {}").format(
        sql.Identifier(key_column), sql.Identifier(column), t.ident
    )
    params: tuple[Any, ...] = ()
    if keys is not None:
        query = sql.SQL("{} WHERE {} = ANY(%s)").format(query, sql.Identifier(key_column))
        params = (list(keys),)
    with conn.transaction():
        return {key: int(version) for key, version in conn.execute(query, params)}


# --------------------------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m cachestorm.pg_versions",
        description="Add, inspect or remove a trigger-kept version column on an existing PostgreSQL table.",
    )
    parser.add_argument("action", choices=("install", "status", "uninstall"))
    parser.add_argument("--dsn", required=True, help="PostgreSQL DSN or URL of the target's database")
    parser.add_argument("--table", required=True, help="the table, as written in SQL (users, app.users)")
    parser.add_argument(
        "--key-column", help="the column that identifies a cached entry (unique); needed by install"
    )
    parser.add_argument(
        "--column", default=DEFAULT_COLUMN, help=f"the version column (default {DEFAULT_COLUMN})"
    )
    return parser.parse_args(argv)


def _connect(dsn: str) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(dsn, autocommit=True, connect_timeout=10)
    except psycopg.ProgrammingError as exc:
        raise ServiceError(
            "PostgreSQL", dsn, f"has an invalid --dsn ({_one_line(exc)})", "fix --dsn."
        ) from exc
    except psycopg.OperationalError as exc:
        raise ServiceError(
            "PostgreSQL", dsn, f"cannot be connected to ({_connect_reason(exc)})", "start it or fix --dsn."
        ) from exc


def _run(args: argparse.Namespace) -> list[str]:
    with _connect(args.dsn) as conn:
        where = f"{redact(args.dsn)}"
        if args.action == "install":
            if not args.key_column:
                raise VersionsError(
                    "install needs --key-column: give the column that identifies a cached entry."
                )
            done = install(conn, args.table, key_column=args.key_column, column=args.column)
            name = resolve(conn, args.table).display
            return [f"install {name} at {where}:", *(done or ["already installed, nothing changed"])]
        if args.action == "uninstall":
            done = uninstall(conn, args.table, column=args.column)
            name = resolve(conn, args.table).display
            return [f"uninstall {name} at {where}:", *(done or ["not installed, nothing changed"])]
        st = status(conn, args.table)
        if st.installed:
            state = f"installed (column {st.column}, function and trigger present)"
        elif st.partial:
            present = [
                f"column {st.column}" if st.column else "",
                "function" if st.function else "",
                "trigger" if st.trigger else "",
            ]
            state = (
                f"partly installed ({', '.join(p for p in present if p)} only): run install to complete it"
            )
        else:
            state = "not installed"
        return [f"status {st.table} at {where}: {state}"]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        lines = _run(args)
    except (VersionsError, ServiceError) as exc:
        print(f"pg_versions: {exc}", file=sys.stderr)
        return 2
    except psycopg.Error as exc:
        # Anything else PostgreSQL refused: still one line, with the password kept out of it.
        print(f"pg_versions: {args.action} failed at {redact(args.dsn)}: {_one_line(exc)}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
