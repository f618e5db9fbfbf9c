"""Engines and sessions. Nothing connects until a session is first used."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from baton.settings import get_settings
from models import prepared


def make_engine(url: str) -> sa.Engine:
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
            # WAL lets the API read while a worker writes; foreign keys are off by default.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    # A database that does not answer fails a connection in bounded time (a 503 at the API).
    connect_args = {"connect_timeout": get_settings().db_connect_timeout}
    engine = sa.create_engine(url, pool_size=10, max_overflow=20, connect_args=connect_args)
    _ping_when_idle(engine)
    prepared.install(engine)
    return engine


# A pooled connection idle for longer than this is pinged (``SELECT 1``) before use; one
# checked in more recently is handed out as it is. A step takes two transactions a few
# milliseconds apart: pinging before each (``pool_pre_ping``) was a round trip per
# transaction. A connection that dies in that window fails its statement as one that
# dies just after a ping always could: the engine's ``through_outage`` runs the
# transaction again, the API answers 503, and SQLAlchemy drops the pool's connections on
# the disconnect, so the next checkout connects afresh.
PING_IDLE_SECONDS = 1.0
_CHECKED_IN = "baton.checked_in"


def _ping_when_idle(engine: sa.Engine) -> None:
    @sa.event.listens_for(engine, "checkin")
    def _stamp(_dbapi_conn, record) -> None:  # type: ignore[no-untyped-def]
        record.info[_CHECKED_IN] = time.monotonic()

    @sa.event.listens_for(engine, "checkout")
    def _ping(dbapi_conn, record, _proxy) -> None:  # type: ignore[no-untyped-def]
        checked_in = record.info.get(_CHECKED_IN)
        if checked_in is not None and time.monotonic() - checked_in < PING_IDLE_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:
            # The pool's documented pessimistic check: it discards this connection and
            # checks out a fresh one (what pool_pre_ping did).
            raise sa.exc.DisconnectionError() from exc


@lru_cache(maxsize=4)
def get_engine(url: str | None = None) -> sa.Engine:
    return make_engine(url or get_settings().database_url)


def session_factory(url: str | None = None) -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(url), expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session] | None = None) -> Iterator[Session]:
    """One unit of work: commits on success, rolls back on error. Owned by a command/task."""
    factory = factory or session_factory()
    with factory() as session, session.begin():
        yield session
