"""Server-side prepared statements for the hottest statements (PostgreSQL + psycopg2).

psycopg2 sends each statement as literal SQL, which PostgreSQL parses and plans anew on
every execution; for the large data-modifying CTEs of a budget hold or a step's completion
the planning costs about as much as the execution. ``execute_prepared`` PREPAREs such a
statement once per server session and EXECUTEs it from then on. The SQL is the one
SQLAlchemy compiles, so locks, conditions and order are unchanged; other drivers and the
embedded SQLite run the statement as it is.

An ORM statement whose objects are wanted back is marked with ``prepared_orm`` instead: the
engine's ``before_cursor_execute`` listener (``install``) sends its SQL as ``EXECUTE`` of
the same SQL, so the ORM reads the same columns in the same order. A statement already in
the driver's text (``models.db.execute_autocommit``: the token check, a submission's
INSERT) goes through ``execute_driver_prepared``.

Not for PgBouncer in transaction-pooling mode (prepared statements live in a server
session): a deployment with one uses session pooling (docs/decisions.md).
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import Session

# Prepared on a connection (its pool record's ``info``, which the pool clears when it
# replaces the DBAPI connection): the names of the statements PREPAREd there.
_PREPARED = "baton.prepared"
_E = TypeVar("_E", bound=sa.Executable)


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
    _prepare_once(conn.connection.info, name, prepare, conn.exec_driver_sql)
    return conn.execute(execute, params)


def _prepare_once(
    info: dict[Any, Any], name: str, prepare: str, run: Callable[[str], object]
) -> None:
    """``run(prepare)`` unless the connection whose pool record's ``info`` this is has
    prepared ``name`` already."""
    done = info.get(_PREPARED)
    if done is None:
        done = info[_PREPARED] = set()
    if name not in done:
        run(prepare)
        done.add(name)


_BIND = re.compile(r"%\(([^)]+)\)s")


def execute_driver_prepared(
    cursor: Any, info: dict[Any, Any], sql: str, params: dict[str, Any]
) -> None:
    """``cursor.execute(sql, params)`` for a statement in psycopg2's text (``%(name)s``
    parameters), as a server-side prepared statement of the cursor's server session
    (``info``: its pool record's): PREPAREd on the first use there, EXECUTEd from then on.
    PostgreSQL infers the parameters' types when it prepares the statement, so each must
    have one from its place (a column, a cast, an operator's other side: ``%(n)s::int``,
    not a bare ``%(n)s + 1``). A statement with an escaped percent sign runs as it is."""
    driver = _driver_prepared(sql)
    if driver is None:
        cursor.execute(sql, params)
        return
    name, prepare, execute = driver
    _prepare_once(info, name, prepare, cursor.execute)
    cursor.execute(execute, params)


@functools.lru_cache(maxsize=16)
def _driver_prepared(sql: str) -> tuple[str, str, str] | None:
    """(name, ``PREPARE`` SQL, ``EXECUTE`` SQL in the driver's text) for ``sql``."""
    positional = _positional(sql, lambda _name: None)
    if positional is None:
        return None
    body, names = positional
    name = _statement_name(body)
    arguments = ", ".join(f"%({n})s" for n in names)
    return (
        name,
        f"PREPARE {name} AS {body}",
        f"EXECUTE {name}({arguments})" if names else f"EXECUTE {name}",
    )


def _positional(sql: str, literal: Callable[[str], str | None]) -> tuple[str, list[str]] | None:
    """``sql`` (the driver's ``%(name)s`` text) with each parameter numbered ``$n`` in order
    of first use, or written in as ``literal(name)`` where that gives text; and the numbered
    parameters' names. None for what is not prepared: an escaped percent sign or an odd
    name (keep it simple)."""
    names: list[str] = []

    def place(match: re.Match[str]) -> str:
        if (text := literal(match.group(1))) is not None:
            return text
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    body = _BIND.sub(place, sql)
    if "%" in body or not all(re.fullmatch(r"\w+", n) for n in names):
        return None
    return body, names


def _statement_name(body: str) -> str:
    """Named after its SQL: a changed statement is a new name on connections that
    prepared the old one, and two statements cannot share one."""
    return f"baton_{hashlib.blake2b(body.encode(), digest_size=8).hexdigest()}"


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
    sql = _prepared_sql(compiled, dialect)
    if sql is None:
        return None
    name, prepare, names = sql
    binds = [compiled.binds[n] for n in names]
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
    return name, prepare, execute


def _prepared_sql(
    compiled: sa.engine.Compiled, dialect: sa.Dialect
) -> tuple[str, str, list[str]] | None:
    """(name, ``PREPARE`` SQL, the names of its parameters in order) for a compiled
    statement, or None where it is not prepared (see ``_prepared``)."""

    def constant(name: str) -> str | None:
        bind = compiled.binds[name]
        if bind.required or bind.effective_value is None:
            return None
        literal = bind.type.literal_processor(dialect)
        return literal(bind.effective_value) if literal is not None else None

    if "POSTCOMPILE" in compiled.string:
        return None  # an IN list, expanded at each execution: not preparable as it is
    positional = _positional(compiled.string, constant)
    if positional is None:
        return None
    sql, names = positional
    types = ", ".join(dialect.type_compiler_instance.process(compiled.binds[n].type) for n in names)
    name = _statement_name(sql)
    return name, f"PREPARE {name} ({types}) AS {sql}", names


# The execution option ``prepared_orm`` sets (read by ``_as_prepared``).
_OPTION = "baton_prepared"


def prepared_orm(statement: _E) -> _E:
    """``statement`` (an ORM statement whose objects are wanted back, which
    ``execute_prepared`` cannot give) marked to run as a server-side prepared statement on
    an engine with ``install`` (PostgreSQL with psycopg2): its SQL is sent as ``EXECUTE``
    of the same SQL PREPAREd, so the ORM loads its rows exactly as before (same columns,
    same order). Run as it is anywhere else."""
    return statement.execution_options(**{_OPTION: True})


def install(engine: sa.Engine) -> None:
    """Run the statements ``prepared_orm`` marks as prepared statements on ``engine``."""
    if engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg2":
        sa.event.listen(engine, "before_cursor_execute", _as_prepared, retval=True)


def _as_prepared(  # type: ignore[no-untyped-def]
    conn: sa.Connection, cursor, statement: str, parameters, context, executemany: bool
) -> tuple[str, Any]:
    """The cursor's SQL for a marked statement: ``EXECUTE name(%(p)s, ...)`` with the
    same parameters, after PREPAREing it on this server session if it was not yet."""
    if executemany or context is None or not context.execution_options.get(_OPTION):
        return statement, parameters
    compiled = context.compiled
    if compiled is None or compiled.string != statement:
        return statement, parameters  # expanded at execution (not the cached SQL)
    sql = _compiled_sql(compiled, conn.dialect)
    if sql is None:
        return statement, parameters
    name, prepare, names = sql
    _prepare_once(conn.connection.info, name, prepare, cursor.execute)
    return f"EXECUTE {name}({', '.join(f'%({n})s' for n in names)})", parameters


# Keyed by the compiled object, which SQLAlchemy's statement cache hands out again for
# the same statement (few are marked).
@functools.lru_cache(maxsize=16)
def _compiled_sql(
    compiled: sa.engine.Compiled, dialect: sa.Dialect
) -> tuple[str, str, list[str]] | None:
    return _prepared_sql(compiled, dialect)


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
