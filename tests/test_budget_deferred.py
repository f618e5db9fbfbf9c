"""Deferred settlements: a settlement that cannot cross an alert level or the limit only
marks its hold ``deferred``; the next reservation on the window folds it into its own
UPDATE; every read sees the true totals. Committed rows on the real PostgreSQL (the
skipped-lock and process-burst cases need other connections to see them)."""

from __future__ import annotations

import multiprocessing
import uuid
from decimal import Decimal

import pytest
import sqlalchemy as sa

from models import BudgetReservation, BudgetWindow, Notification
from models.db import session_factory, transaction
from orchestration import budget
from orchestration.budget_limits import LimitView
from orchestration.errors import BudgetExceeded
from tests import factories


@pytest.fixture
def hot(database_url):
    """A committed organization with one ``block`` limit of 1 USD (alerts at 80 %)."""
    with transaction(session_factory(database_url)) as s:
        org = factories.organization(s)
        limit = factories.budget_limit(s, org, amount_usd="1", alert_threshold="0.8")
        window = budget.current_window(s, limit)
        return {"scope": budget.CallScope(org.id), "limit": limit.id, "window": window.id}


def reserve(database_url, hot, key: str, amount: str) -> None:
    with transaction(session_factory(database_url)) as s:
        budget.reserve(
            s, scope=hot["scope"], call_key=f"{hot['window']}:{key}", amount=Decimal(amount), job_id=None,
            hold_seconds=60,
        )  # fmt: skip


def settle(database_url, hot, key: str, actual: str) -> list:
    with transaction(session_factory(database_url)) as s:
        return budget.settle(s, call_key=f"{hot['window']}:{key}", actual=Decimal(actual))


def state(database_url, hot) -> tuple:
    """(spent, reserved) as read, (spent, reserved) as stored, and the holds' statuses."""
    with transaction(session_factory(database_url)) as s:
        w = s.get(BudgetWindow, hot["window"])
        statuses = s.scalars(
            sa.select(BudgetReservation.status)
            .where(BudgetReservation.window_id == hot["window"])
            .order_by(BudgetReservation.created_at)
        ).all()
        return (w.spent, w.reserved), (w.applied_spent, w.applied_reserved), statuses


def alerts(database_url, hot) -> list[str]:
    with transaction(session_factory(database_url)) as s:
        return [
            n.data["level"]
            for n in s.scalars(
                sa.select(Notification)
                .where(Notification.data["limit_id"].as_string() == str(hot["limit"]))
                .order_by(Notification.created_at)
            )
        ]


def test_a_deferred_settlement_leaves_the_window_row_and_reads_see_it(database_url, hot):
    reserve(database_url, hot, "a", "0.3")
    assert settle(database_url, hot, "a", "0.2") == []  # no window charged: no alert to judge
    # No reservation follows: the columns still count the hold, every read the settlement.
    assert state(database_url, hot) == (
        (Decimal("0.2"), 0),
        (0, Decimal("0.3")),
        ["deferred"],
    )
    # What the limit listings and the summary read (one query for a page of windows).
    with transaction(session_factory(database_url)) as s:
        limit = s.get(budget.BudgetLimit, hot["limit"])
        view = LimitView(limit, budget.current_windows(s, [limit])[limit.id])
        assert (view.window.spent, view.remaining, view.percentage) == (
            Decimal("0.2"),
            Decimal("0.8"),
            0.2,
        )


def test_the_next_reservation_folds_deferred_settlements_in(database_url, hot):
    reserve(database_url, hot, "a", "0.3")
    reserve(database_url, hot, "b", "0.3")
    settle(database_url, hot, "a", "0.1")
    settle(database_url, hot, "b", "0.3")
    assert state(database_url, hot)[2] == ["deferred", "deferred"]
    # Stored, 0.6 is held; true, 0.4 is spent. 0.55 fits only once the two are folded.
    reserve(database_url, hot, "c", "0.55")
    assert state(database_url, hot) == (
        (Decimal("0.4"), Decimal("0.55")),
        (Decimal("0.4"), Decimal("0.55")),
        ["settled", "settled", "held"],
    )


def test_a_deferred_hold_another_transaction_has_locked_is_skipped(database_url, hot):
    reserve(database_url, hot, "a", "0.6")
    settle(database_url, hot, "a", "0.1")
    other = session_factory(database_url)()
    try:
        # Another transaction (a reservation folding it) holds the deferred row.
        other.execute(
            sa.select(BudgetReservation.id)
            .where(BudgetReservation.call_key == f"{hot['window']}:a")
            .with_for_update()
        )
        # 0.6 (stored) + 0.6 does not fit, 0.1 + 0.6 does: the first statement skips the
        # locked row and refuses; the exact retry counts it at its actual cost.
        reserve(database_url, hot, "b", "0.6")
        assert state(database_url, hot) == (
            (Decimal("0.1"), Decimal("0.6")),
            (0, Decimal("1.2")),
            ["deferred", "held"],
        )
        # Left counted in full, never applied twice: 0.1 + 0.6 held + 0.4 is over 1.
        with pytest.raises(BudgetExceeded):
            reserve(database_url, hot, "c", "0.4")
    finally:
        other.rollback()
        other.close()
    settle(database_url, hot, "b", "0.6")  # reaches 0.7 < 0.8 at most: deferred
    reserve(database_url, hot, "d", "0.3")  # folds both: 0.7 + 0.3 fits exactly
    assert state(database_url, hot) == (
        (Decimal("0.7"), Decimal("0.3")),
        (Decimal("0.7"), Decimal("0.3")),
        ["settled", "settled", "held"],
    )


def test_an_actual_over_the_hold_settles_on_the_window_at_once(database_url, hot):
    reserve(database_url, hot, "a", "0.1")
    (window,) = settle(database_url, hot, "a", "0.2")
    assert (window.id, window.spent) == (hot["window"], Decimal("0.2"))
    assert state(database_url, hot) == (
        (Decimal("0.2"), 0),
        (Decimal("0.2"), 0),
        ["settled"],
    )


def test_alerts_fire_at_the_settlement_that_crosses_them(database_url, hot):
    reserve(database_url, hot, "a", "0.5")
    settle(database_url, hot, "a", "0.5")  # 0.5 counted at most: deferred, nothing due
    assert (state(database_url, hot)[2], alerts(database_url, hot)) == (["deferred"], [])
    reserve(database_url, hot, "b", "0.35")
    # 0.85 counted could cross 80 %: applied at once, and it does cross.
    (window,) = settle(database_url, hot, "b", "0.35")
    with transaction(session_factory(database_url)) as s:
        budget.raise_alerts(s, [window])
    assert alerts(database_url, hot) == ["warning"]
    assert state(database_url, hot)[0] == (Decimal("0.85"), 0)
    reserve(database_url, hot, "c", "0.15")
    (window,) = settle(database_url, hot, "c", "0.15")
    with transaction(session_factory(database_url)) as s:
        budget.raise_alerts(s, [window])
    assert alerts(database_url, hot) == ["warning", "critical"]


def test_resync_counts_deferred_settlements_once(database_url, hot):
    from models import Organization

    reserve(database_url, hot, "a", "0.3")
    with transaction(session_factory(database_url)) as s:
        org = s.get(Organization, hot["scope"].organization_id)
        factories.usage_record(
            s, org, call_key=f"{hot['window']}:a", cost="0.2"
        )  # the call's ledger row
        assert budget.settle(s, call_key=f"{hot['window']}:a", actual=Decimal("0.2")) == []
    with transaction(session_factory(database_url)) as s:
        limit = s.get(budget.BudgetLimit, hot["limit"])
        budget.resync_window(s, limit)
    reserve(database_url, hot, "b", "0.1")  # folds a's 0.2 into the resynced column
    assert state(database_url, hot)[0] == (Decimal("0.2"), Decimal("0.1"))


def _burst(args: tuple[str, str, int]) -> int:
    """Reserve 0.02, settle 0.01, until a refusal finds the limit really spent (the true
    spent has no room for 0.02); a refusal while others hold just tries again."""
    url, org, index = args
    import sqlalchemy.orm

    engine = sa.create_engine(url, pool_size=1)
    factory = sqlalchemy.orm.sessionmaker(bind=engine, expire_on_commit=False)
    scope = budget.CallScope(uuid.UUID(org))
    done = 0
    for n in range(2000):
        key = f"burst:{index}:{n}"
        try:
            with transaction(factory) as s:
                budget.reserve(
                    s, scope=scope, call_key=key, amount=Decimal("0.02"), job_id=None,
                    hold_seconds=60,
                )  # fmt: skip
        except BudgetExceeded:
            with transaction(factory) as s:
                window = budget.current_windows(s, budget.applicable_limits(s, scope))
                if next(iter(window.values())).spent + Decimal("0.02") > 1:
                    break
            continue
        with transaction(factory) as s:
            budget.settle(s, call_key=key, actual=Decimal("0.01"))
        done += 1
    engine.dispose()
    return done


def test_a_burst_across_processes_never_overspends(database_url, hot):
    """Six processes reserving 0.02 and settling 0.01 on a 1 USD limit: settlements defer
    below 80 %, reservations fold them, refused holds retry exactly. Every call that fits
    runs, none more: the window ends exactly at what was settled, at 0.99 or 1."""
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(6) as pool:
        done = sum(
            pool.map(
                _burst, [(database_url, str(hot["scope"].organization_id), i) for i in range(6)]
            )
        )
    (spent, reserved), _, statuses = state(database_url, hot)
    assert reserved == 0 and spent == Decimal("0.01") * done
    assert done in (99, 100)
    assert len(statuses) == done and set(statuses) <= {"deferred", "settled"}


def _index_scans(plan: dict) -> list[dict]:
    """Every index scan node of a JSON plan."""
    own = [plan] if "Index Cond" in plan else []
    return own + [scan for child in plan.get("Plans", ()) for scan in _index_scans(child)]


def test_a_settlement_reads_its_own_holds_not_every_settled_one(database_url, hot):
    """A settlement (a worker's, with its scope, and the plain one) finds its call's holds
    by key and status in one index. With the key's index alone, the worker's generic plan
    took the status index's 'held' entries, one for every hold since the last VACUUM
    (dead ones too: a bitmap scan never marks them), and each settlement read more of
    them the more calls had settled."""
    from models import utcnow
    from models.prepared import _prepared

    for n in range(300):
        reserve(database_url, hot, f"before-{n}", "0.0001")
        settle(database_url, hot, f"before-{n}", "0.0001")
    reserve(database_url, hot, "now", "0.0001")
    params = {"key": f"{hot['window']}:now", "actual": Decimal("0.0001")}
    settlements = [
        (budget._settle_statement(), params),
        (budget._settle_scoped_statement(False, False, False),
         params | budget._scope_params(hot["scope"], utcnow())),
    ]  # fmt: skip
    engine = sa.create_engine(database_url, pool_size=1)
    try:
        with engine.connect() as conn:
            # As autovacuum's ANALYZE leaves it: few live holds are 'held' (the index still
            # has an entry for every hold that ever was); the worker's generic plan.
            conn.exec_driver_sql("ANALYZE budget_reservations")
            conn.exec_driver_sql("SET plan_cache_mode = force_generic_plan")
            plans = []
            for statement, values in settlements:
                _name, prepare, execute = _prepared(statement, conn.dialect)
                conn.exec_driver_sql(prepare)
                explain = sa.text("EXPLAIN (ANALYZE, FORMAT JSON) " + execute.element.text)
                [(document,)] = conn.execute(
                    explain.bindparams(*execute.element._bindparams.values()), values
                ).all()
                plans.append(document[0]["Plan"])
            conn.rollback()
    finally:
        engine.dispose()
    for plan in plans:
        by_status = [scan for scan in _index_scans(plan) if "'held'" in scan["Index Cond"]]
        assert by_status and all("call_key" in scan["Index Cond"] for scan in by_status), plan
