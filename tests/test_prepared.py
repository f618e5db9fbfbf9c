"""models/prepared.py: a hot statement run as a server-side prepared statement answers as
the same statement run plainly, on PostgreSQL; elsewhere (or an IN list) it runs plainly."""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from sqlalchemy.orm import Session

from models import Job, prepared
from tests import factories

_NAMES = sa.text("SELECT name FROM pg_prepared_statements WHERE name LIKE 'baton_%'")


def _statement() -> sa.Select:
    """A constant (written into the prepared SQL), a None-valued constant (kept a
    parameter), a parameter, and an unnamed column (a scalar subquery)."""
    jobs = Job.__table__
    return sa.select(
        jobs.c.id,
        jobs.c.status,
        sa.literal("fixed", sa.String).label("constant"),
        sa.func.coalesce(sa.bindparam("nothing", None, type_=sa.String), "none").label("null"),
        sa.select(sa.func.count()).select_from(jobs).scalar_subquery(),
    ).where(jobs.c.id == sa.bindparam("job_id", type_=jobs.c.id.type))


def test_a_prepared_statement_answers_as_the_plain_one(db: Session):
    org = factories.organization(db)
    job = factories.job(db, org)
    db.flush()
    statement = _statement()
    plain = db.execute(statement, {"job_id": job.id}).one()
    name = prepared._prepared(statement, db.get_bind().dialect)[0]  # type: ignore[index]
    assert name not in set(db.scalars(_NAMES))

    first = prepared.execute_prepared(db, statement, {"job_id": job.id}).one()
    again = prepared.execute_prepared(db, statement, {"job_id": job.id}).one()

    assert name in set(db.scalars(_NAMES))  # prepared on its first use, then executed
    assert tuple(first) == tuple(again) == tuple(plain)
    assert first.id == job.id and first.constant == "fixed" and first.null == "none"
    assert prepared.execute_prepared(db, statement, {"job_id": org.id}).first() is None


def test_an_in_list_and_another_database_run_the_statement_as_it_is(db: Session, tmp_path):
    jobs = Job.__table__
    with_in = sa.select(jobs.c.id).where(jobs.c.status.in_(["queued", "running"]))
    assert prepared._prepared(with_in, db.get_bind().dialect) is None
    assert prepared.execute_prepared(db, with_in, {}).all() is not None

    sqlite = sa.create_engine(f"sqlite:///{tmp_path / 'plain.db'}")
    try:
        assert prepared._prepared(_statement(), sqlite.dialect) is None
        with Session(sqlite) as session:
            row = prepared.execute_prepared(
                session, sa.select(sa.literal(1).label("one")), {}
            ).one()
        assert row.one == 1
    finally:
        sqlite.dispose()


def test_a_marked_orm_statement_runs_prepared_and_loads_the_same_objects(db: Session):
    """``prepared_orm``: the ORM's statement sent as EXECUTE of itself, PREPAREd on the
    connection's first use; entities (two of one class: no column mixed up) and an unnamed
    column come back as from the plain statement."""
    org = factories.organization(db)
    jobs = [factories.job(db, org) for _ in range(2)]
    db.flush()
    other, uuid = sa.orm.aliased(Job), Job.__table__.c.id.type
    count = sa.select(sa.func.count()).where(Job.organization_id == sa.bindparam("org", type_=uuid))
    statement = (
        sa.select(Job, other, count.scalar_subquery())
        .join(other, sa.and_(other.organization_id == Job.organization_id, other.id != Job.id))
        .where(Job.id == sa.bindparam("job_id", type_=uuid))
    )
    plain = db.execute(statement, {"job_id": jobs[0].id, "org": org.id}).one()
    before = set(db.scalars(_NAMES))
    marked = prepared.prepared_orm(statement)

    first = db.execute(marked, {"job_id": jobs[0].id, "org": org.id}).one()
    assert set(db.scalars(_NAMES)) - before  # PREPAREd on its first run
    again = db.execute(marked, {"job_id": jobs[1].id, "org": org.id}).one()

    assert (first[0].id, first[1].id, first[2]) == (plain[0].id, plain[1].id, plain[2])
    assert first[2] == 2
    assert (first[0], first[1]) == (jobs[0], jobs[1])  # the session's own objects
    assert (again[0].id, again[1].id) == (jobs[1].id, jobs[0].id)
    assert first[0].organization_id == org.id and first[0].title == jobs[0].title


def test_a_statement_in_autocommit_is_prepared_once_per_server_session(database_url):
    """``models.db.execute_autocommit`` (the token check, a submission's INSERT) runs its
    driver SQL as a prepared statement: PREPAREd on a server session's first use, with the
    parameters' types inferred by PostgreSQL (a repeated name is one parameter), EXECUTEd
    after; a new server session prepares it again; an escaped percent sign runs plainly."""
    from models.db import execute_autocommit, make_engine

    engine = make_engine(database_url)  # its own pool: one connection, used in turn
    try:
        # The statement gives each parameter its type (a cast, a column, an operator's
        # other side): a prepared statement's parameters are typed when it is prepared.
        sql = "SELECT %(n)s::int + %(n)s AS twice, %(id)s::uuid AS id, 'x' || %(text)s AS text"
        name, prepare, execute = prepared._driver_prepared(sql)  # type: ignore[misc]
        assert (
            prepare
            == f"PREPARE {name} AS SELECT $1::int + $1 AS twice, $2::uuid AS id, 'x' || $3 AS text"
        )
        assert execute == f"EXECUTE {name}(%(n)s, %(id)s, %(text)s)"
        job_id = uuid.uuid4()

        def run() -> tuple:
            return tuple(execute_autocommit(engine, sql, {"n": 2, "id": str(job_id), "text": "y"}))

        def names() -> set[str]:
            with engine.connect() as conn:
                return set(conn.scalars(_NAMES))

        assert run() == (4, job_id, "xy")
        assert names() == {name}
        assert run() == (4, job_id, "xy")  # EXECUTEd: a second PREPARE would have failed
        with engine.connect() as conn:
            conn.invalidate()  # the next use is a new server session
        assert names() == set()
        assert run() == (4, job_id, "xy")
        assert names() == {name}

        escaped = "SELECT '100%%' || %(text)s AS text"
        assert prepared._driver_prepared(escaped) is None
        assert tuple(execute_autocommit(engine, escaped, {"text": "!"})) == ("100%!",)
        assert names() == {name}
    finally:
        engine.dispose()
