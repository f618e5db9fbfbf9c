"""Server-side prepared statements for the hottest statements (PostgreSQL + psycopg2).

psycopg2 sends each statement as literal SQL, which PostgreSQL parses and plans anew on
every execution; for the large data-modifying CTEs of a budget hold or a step's completion
the planning costs about as much as the execution. ``execute_prepared`` PREPAREs such a
statement once per server session and EXECUTEs it from then on. The SQL is the one
SQLAlchemy compiles, so locks, conditions and order are unchanged; other drivers and the
embedded SQLite run the statement as it is.

Not for PgBouncer in transaction-pooling mode (prepared statements live in a server
session): a deployment with one uses session pooling (docs/decisions.md).
"""

from __future__ import annotations

import functools
import hashlib
import re
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

# Prepared on a connection (its pool record's ``info``, which the pool clears when it
# replaces the DBAPI connection): the names of the statements PREPAREd there.
_PREPARED = "baton.prepared"


def execute_prepared(
    session: Session, statement: sa.Executable, params: dict[str, Any]
) -> sa.CursorResult[Any]:
    """``statement`` run as a server-side prepared statement on PostgreSQL with psycopg2
    (which otherwise sends literal SQL, planned anew on every execution: for the
    budget's reservation CTE, and the step completion's, planning cost the server about
    as much as running them). For the hot statements of the budget and the engine.
    PREPAREd on the connection's first use, EXECUTEd from then on; a prepared statement
    lives as long as its server session and survives rollbacks. Any other driver runs
    the statement as it is."""
    conn = session.connection()
    prepared = _prepared(statement, conn.dialect)
    if prepared is None:
        return conn.execute(statement, params)
    name, prepare, execute = prepared
    done = conn.connection.info.get(_PREPARED)
    if done is None:
        done = conn.connection.info[_PREPARED] = set()
    if name not in done:
        conn.exec_driver_sql(prepare)
        done.add(name)
    return conn.execute(execute, params)


_BIND = re.compile(r"%\(([^)]+)\)s")


# Keyed by the statement object (each built once): room for every shape of every caller
# (budget scopes 8 + 8, holds 2, settle, completion 4, append_events up to 16).
@functools.lru_cache(maxsize=128)
def _prepared(
    statement: sa.Executable, dialect: sa.Dialect
) -> tuple[str, str, sa.TextualSelect] | None:
    """(name, ``PREPARE`` SQL, ``EXECUTE`` statement) for ``statement``, or None where it
    is not prepared. The statement's constants are written into the prepared SQL; the
    EXECUTE is a text statement with its other parameters and its result columns, typed
    as the statement's own, so values are processed as they were (UTC datetimes, UUIDs)."""
    if dialect.name != "postgresql" or dialect.driver != "psycopg2":
        return None
    compiled = statement.compile(dialect=dialect)
    names: list[str] = []

    def place(match: re.Match[str]) -> str:
        bind = compiled.binds[match.group(1)]
        constant = not bind.required and bind.effective_value is not None
        literal = bind.type.literal_processor(dialect) if constant else None
        if literal is not None:
            return literal(bind.effective_value)
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    if "POSTCOMPILE" in compiled.string:
        return None  # an IN list, expanded at each execution: not preparable as it is
    sql = _BIND.sub(place, compiled.string)
    if "%" in sql or not all(re.fullmatch(r"\w+", n) for n in names):
        return None  # an escaped percent sign or an odd name: keep it simple, do not prepare
    binds = [compiled.binds[n] for n in names]
    types = ", ".join(dialect.type_compiler_instance.process(b.type) for b in binds)
    # Named after its SQL: a changed statement is a new name on connections that
    # prepared the old one, and two statements cannot share one.
    name = f"baton_{hashlib.blake2b(sql.encode(), digest_size=8).hexdigest()}"
    execute = (
        sa.text(f"EXECUTE {name}({', '.join(':' + n for n in names)})")
        .bindparams(
            *(
                sa.bindparam(n, type_=b.type)
                if b.required
                else sa.bindparam(n, b.effective_value, type_=b.type)
                for n, b in zip(names, binds, strict=True)
            )
        )
        .columns(*(_result_column(i, c) for i, c in enumerate(statement.exported_columns)))
    )
    return name, f"PREPARE {name} ({types}) AS {sql}", execute


def _result_column(position: int, column: Any) -> sa.ColumnClause[Any]:
    """The EXECUTE's result column at ``position`` (matched by position): the statement's
    own name and type, a made-up name for an unnamed expression (a scalar subquery)."""
    try:
        name = column.name
    except AttributeError:
        name = None
    if not isinstance(name, str):
        name = f"column_{position}"
    return sa.column(name, getattr(column, "type", sa.types.NULLTYPE))
