"""Budget limits API: CRUD, roles, every bad input, tenant isolation, windows and alerts."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from models import BudgetWindow, Notification
from orchestration import budget
from tests import factories
from tests.test_auth import assert_error

URL = "/api/v1/budget/limits"


@pytest.fixture
def tenant(db, app):
    org = factories.organization(db, name="Acme")
    admin = factories.user(db, org, role="admin")
    manager = factories.user(db, org, role="manager")
    member = factories.user(db, org, role="member", full_name="Mia Member")
    viewer = factories.user(db, org, role="viewer")
    project = factories.project(db, org, name="Shop")
    agent = factories.agent(db, org, name="Coder")
    other_org = factories.organization(db)
    outsider = factories.user(db, other_org, role="admin")
    db.commit()
    return {
        "org": org,
        "admin": admin,
        "member": member,
        "project": project,
        "agent": agent,
        "other_org": other_org,
        "outsider": outsider,
        "foreign_project": factories.project(db, other_org),
        "foreign_agent": factories.agent(db, other_org),
        "foreign_limit": factories.budget_limit(db, other_org),
        "headers": factories.auth_headers(app, admin),
        "manager_headers": factories.auth_headers(app, manager),
        "member_headers": factories.auth_headers(app, member),
        "viewer_headers": factories.auth_headers(app, viewer),
        "outsider_headers": factories.auth_headers(app, outsider),
    }


def create(client, headers, expect=201, **fields):
    body = {
        "name": "Daily Global Limit",
        "scope_type": "organization",
        "amount_usd": "50.00",
        "period": "daily",
        **fields,
    }
    response = client.post(URL, json=body, headers=headers)
    assert response.status_code == expect, response.get_json()
    return response.get_json()


def day_start():
    return budget.window_bounds("daily")[0]


def test_limit_crud(client, tenant):
    h = tenant["headers"]
    created = create(
        client,
        h,
        name="Daily Global Limit",
        scope_type="global",
        scope_id=None,
        amount_usd=50.00,  # seed 001 sends a number
        alert_threshold=0.80,
        action_on_exceed="warn",
    )
    uuid.UUID(created["id"])
    assert created["amount_usd"] == "50.00"
    assert created["alert_threshold"] == 0.8
    assert created["scope_type"] == "global" and created["scope_id"] is None
    assert created["scope_name"] == "Acme"
    assert created["action_on_exceed"] == "warn" and created["is_active"] is True
    assert created["spent"] == "0.00" and created["reserved"] == "0.00"
    assert created["remaining"] == "50.00" and created["percentage"] == 0.0
    assert created["window_start"].startswith(day_start().date().isoformat())
    assert created["created_by_id"] == str(tenant["admin"].id)

    url = f"{URL}/{created['id']}"
    fetched = client.get(url, headers=tenant["viewer_headers"])
    assert fetched.status_code == 200 and fetched.get_json()["name"] == "Daily Global Limit"

    patched = client.patch(url, json={"amount_usd": "75.5", "alert_threshold": "0.9"}, headers=h)
    assert patched.status_code == 200, patched.get_json()
    assert patched.get_json()["amount_usd"] == "75.50"
    assert patched.get_json()["alert_threshold"] == 0.9
    assert patched.get_json()["action_on_exceed"] == "warn"  # untouched fields stay

    put = client.put(url, json={"name": "Renamed", "action_on_exceed": "block"}, headers=h)
    assert put.status_code == 200
    assert put.get_json()["name"] == "Renamed" and put.get_json()["amount_usd"] == "75.50"

    listed = client.get(URL, headers=h).get_json()
    assert [item["id"] for item in listed["items"]] == [created["id"]]
    assert listed["total"] == 1 and listed["limit"] == 20 and listed["offset"] == 0

    deleted = client.delete(url, headers=h)
    assert deleted.status_code == 204
    assert_error(client.get(url, headers=h), 404, "RESOURCE_NOT_FOUND")
    assert_error(client.patch(url, json={"name": "x"}, headers=h), 404, "RESOURCE_NOT_FOUND")
    assert_error(client.delete(url, headers=h), 404, "RESOURCE_NOT_FOUND")
    assert client.get(URL, headers=h).get_json()["total"] == 0


def test_defaults_and_money_formats(client, tenant):
    created = create(client, tenant["headers"], amount_usd="25")
    assert created["amount_usd"] == "25.00"
    assert created["alert_threshold"] == 0.8
    assert created["action_on_exceed"] == "block"
    small = create(client, tenant["headers"], amount_usd="0.0000001")
    assert small["amount_usd"] == "0.0000001"
    assert create(client, tenant["headers"], amount_usd=12.5)["amount_usd"] == "12.50"


def test_only_admins_and_managers_write(client, tenant):
    for headers in (tenant["member_headers"], tenant["viewer_headers"]):
        assert_error(client.post(URL, json={}, headers=headers), 403, "FORBIDDEN")
    created = create(client, tenant["manager_headers"])
    url = f"{URL}/{created['id']}"
    for headers in (tenant["member_headers"], tenant["viewer_headers"]):
        assert_error(client.patch(url, json={"name": "x"}, headers=headers), 403, "FORBIDDEN")
        assert_error(client.put(url, json={"name": "x"}, headers=headers), 403, "FORBIDDEN")
        assert_error(client.delete(url, headers=headers), 403, "FORBIDDEN")
        assert client.get(url, headers=headers).status_code == 200
        assert client.get(URL, headers=headers).get_json()["total"] == 1
    assert (
        client.patch(url, json={"name": "y"}, headers=tenant["manager_headers"]).status_code == 200
    )
    assert_error(client.get(URL), 401, "AUTHENTICATION_REQUIRED")


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"amount_usd": 0}, "amount_usd"),
        ({"amount_usd": "-5"}, "amount_usd"),
        ({"amount_usd": "ten"}, "amount_usd"),
        ({"amount_usd": "NaN"}, "amount_usd"),
        ({"amount_usd": "Infinity"}, "amount_usd"),
        ({"amount_usd": True}, "amount_usd"),
        ({"amount_usd": "1000000000.01"}, "amount_usd"),
        ({"amount_usd": "1.00000000001"}, "amount_usd"),  # finer than stored: not rounded
        ({"amount_usd": None}, "amount_usd"),
        ({"alert_threshold": 0}, "alert_threshold"),
        ({"alert_threshold": 1.5}, "alert_threshold"),
        ({"alert_threshold": -0.2}, "alert_threshold"),
        ({"alert_threshold": "1.00001"}, "alert_threshold"),
        ({"scope_type": "planet"}, "scope_type"),
        ({"period": "yearly"}, "period"),
        ({"action_on_exceed": "explode"}, "action_on_exceed"),
        ({"name": ""}, "name"),
        ({"is_active": "maybe"}, "is_active"),
        ({"scope_id": "not-a-uuid"}, "scope_id"),
        ({"colour": "red"}, "colour"),
        ({"scope_type": "project"}, "scope_id"),  # project limits name their project
        ({"scope_type": "organization", "scope_id": str(uuid.uuid4())}, "scope_id"),
        ({"scope_type": "global", "scope_id": str(uuid.uuid4())}, "scope_id"),
    ],
)
def test_bad_limit_input_is_a_422(client, tenant, changes, field):
    body = {
        "name": "cap",
        "scope_type": "organization",
        "amount_usd": "50",
        "period": "daily",
        **changes,
    }
    assert_error(
        client.post(URL, json=body, headers=tenant["headers"]), 422, "VALIDATION_ERROR", field
    )


@pytest.mark.parametrize("missing", ["name", "scope_type", "amount_usd", "period"])
def test_required_fields(client, tenant, missing):
    body = {"name": "cap", "scope_type": "organization", "amount_usd": "50", "period": "daily"}
    del body[missing]
    assert_error(
        client.post(URL, json=body, headers=tenant["headers"]), 422, "VALIDATION_ERROR", missing
    )


def test_bad_update_input_is_a_422(client, tenant):
    url = f"{URL}/{create(client, tenant['headers'])['id']}"
    h = tenant["headers"]
    for body, field in (
        ({"amount_usd": 0}, "amount_usd"),
        ({"alert_threshold": 2}, "alert_threshold"),
        ({"action_on_exceed": "nope"}, "action_on_exceed"),
        ({"unknown": 1}, "unknown"),
    ):
        assert_error(client.patch(url, json=body, headers=h), 422, "VALIDATION_ERROR", field)


def test_scope_ids_must_be_the_callers(client, tenant):
    h = tenant["headers"]
    for scope_type, scope_id in (
        ("project", tenant["foreign_project"].id),
        ("agent", tenant["foreign_agent"].id),
        ("user", tenant["outsider"].id),
        ("project", uuid.uuid4()),
        ("project", tenant["agent"].id),  # an agent's id is not a project
    ):
        error = assert_error(
            client.post(
                URL,
                json={
                    "name": "x",
                    "scope_type": scope_type,
                    "scope_id": str(scope_id),
                    "amount_usd": "5",
                    "period": "daily",
                },
                headers=h,
            ),
            404,
            "RESOURCE_NOT_FOUND",
        )
        assert error["details"] == [{"field": "scope_id", "message": "not found"}]
    for scope_type, row in (
        ("project", tenant["project"]),
        ("agent", tenant["agent"]),
        ("user", tenant["member"]),
    ):
        created = create(client, h, scope_type=scope_type, scope_id=str(row.id))
        assert created["scope_id"] == str(row.id)
    names = {
        i["scope_type"]: i["scope_name"] for i in client.get(URL, headers=h).get_json()["items"]
    }
    assert names == {"project": "Shop", "agent": "Coder", "user": "Mia Member"}


def test_another_organizations_limit_is_404(client, tenant):
    url = f"{URL}/{tenant['foreign_limit'].id}"
    h = tenant["headers"]
    assert_error(client.get(url, headers=h), 404, "RESOURCE_NOT_FOUND")
    assert_error(client.patch(url, json={"amount_usd": "1"}, headers=h), 404, "RESOURCE_NOT_FOUND")
    assert_error(client.put(url, json={"amount_usd": "1"}, headers=h), 404, "RESOURCE_NOT_FOUND")
    assert_error(client.delete(url, headers=h), 404, "RESOURCE_NOT_FOUND")
    assert client.get(URL, headers=h).get_json()["total"] == 0
    own = client.get(url, headers=tenant["outsider_headers"]).get_json()
    assert own["amount_usd"] == "10.00"  # untouched


def test_scope_and_period_cannot_change(client, tenant):
    h = tenant["headers"]
    limit = create(client, h, scope_type="project", scope_id=str(tenant["project"].id))
    url = f"{URL}/{limit['id']}"
    for body, field in (
        ({"period": "monthly"}, "period"),
        ({"scope_type": "organization"}, "scope_type"),
        ({"scope_id": str(tenant["agent"].id)}, "scope_id"),
    ):
        error = assert_error(
            client.patch(url, json=body, headers=h), 422, "VALIDATION_ERROR", field
        )
        assert "create a new limit" in error["details"][0]["message"]
    # Sending the current values is not a change.
    same = {"period": "daily", "scope_type": "project", "scope_id": str(tenant["project"].id)}
    assert client.put(url, json=same, headers=h).status_code == 200


def test_list_filters_sort_and_pagination(client, tenant):
    h = tenant["headers"]
    create(client, h, name="a", amount_usd="30", period="daily", action_on_exceed="warn")
    create(client, h, name="b", amount_usd="10", period="monthly", action_on_exceed="block")
    create(
        client, h, name="c", amount_usd="20", period="monthly", action_on_exceed="pause",
        is_active=False,
    )  # fmt: skip
    create(
        client, h, name="d", amount_usd="40", period="total", scope_type="project",
        scope_id=str(tenant["project"].id),
    )  # fmt: skip

    def names(query: str) -> list[str]:
        response = client.get(f"{URL}?{query}", headers=h)
        assert response.status_code == 200, response.get_json()
        return [i["name"] for i in response.get_json()["items"]]

    assert names("sort=name") == ["a", "b", "c", "d"]
    assert names("period=monthly&sort=name") == ["b", "c"]
    assert names("action_on_exceed=pause") == ["c"]
    assert names("is_active=false") == ["c"]
    assert names("is_active=true&sort=-amount_usd") == ["d", "a", "b"]
    assert names("scope_type=project") == ["d"]
    assert names("sort=amount_usd&limit=2") == ["b", "c"]
    assert names("sort=amount_usd&limit=2&page=2") == ["a", "d"]
    page = client.get(f"{URL}?sort=amount_usd&limit=2&offset=3", headers=h).get_json()
    assert (
        page["total"] == 4 and page["offset"] == 3 and [i["name"] for i in page["items"]] == ["d"]
    )
    for query, field in (
        ("period=yearly", "period"),
        ("scope_type=x", "scope_type"),
        ("action_on_exceed=x", "action_on_exceed"),
        ("is_active=perhaps", "is_active"),
        ("sort=colour", "sort"),
        ("limit=101", "limit"),
    ):
        assert_error(client.get(f"{URL}?{query}", headers=h), 422, "VALIDATION_ERROR", field)


def test_a_new_limit_counts_what_its_scope_already_spent(client, db, tenant):
    org, project = tenant["org"], tenant["project"]
    today = day_start()
    factories.usage_record(db, org, cost="1.25", created_at=today)
    factories.usage_record(db, org, cost="0.25", created_at=today + timedelta(hours=1))
    factories.usage_record(db, org, cost="0.40", project_id=project.id, created_at=today)
    factories.usage_record(db, org, cost="5.00", created_at=today - timedelta(microseconds=1))
    factories.usage_record(db, tenant["other_org"], cost="9.00", created_at=today)
    db.commit()
    h = tenant["headers"]

    daily = create(client, h, amount_usd="2.50")
    assert daily["spent"] == "1.90" and daily["remaining"] == "0.60"
    assert daily["percentage"] == 0.76
    total = create(client, h, period="total", amount_usd="100")
    assert total["spent"] == "6.90" and total["window_end"] is None
    scoped = create(client, h, scope_type="project", scope_id=str(project.id), amount_usd="1")
    assert scoped["spent"] == "0.40" and scoped["percentage"] == 0.4

    # A call in flight holds its worst case: remaining drops, spent does not.
    with db.begin_nested():
        budget.reserve(
            db, scope=budget.CallScope(org.id, project.id), call_key="k1",
            amount=Decimal("0.50"), job_id=None, hold_seconds=60,
        )  # fmt: skip
    fetched = client.get(f"{URL}/{daily['id']}", headers=h).get_json()
    assert fetched["spent"] == "1.90" and fetched["reserved"] == "0.50"
    assert fetched["remaining"] == "0.10"
    # Over-spent limits show no negative remaining.
    over = create(client, h, amount_usd="1", action_on_exceed="warn")
    assert over["remaining"] == "0.00" and over["percentage"] == 1.9


def test_deleting_a_limit_with_a_hold_in_flight_lets_the_call_settle(client, db, tenant):
    org = tenant["org"]
    limit = create(client, tenant["headers"], amount_usd="10")
    scope = budget.CallScope(org.id)
    with db.begin_nested():
        holds = budget.reserve(
            db, scope=scope, call_key="in-flight", amount=Decimal("2"), job_id=None, hold_seconds=60
        )
    assert len(holds) == 1

    assert client.delete(f"{URL}/{limit['id']}", headers=tenant["headers"]).status_code == 204

    with db.begin_nested():
        windows = budget.settle(db, call_key="in-flight", actual=Decimal("1.5"))
        assert budget.raise_alerts(db, windows) == []  # a deleted limit alerts no one
    window = db.scalar(
        sa.select(BudgetWindow).where(BudgetWindow.limit_id == uuid.UUID(limit["id"]))
    )
    db.refresh(window)
    assert window.spent == Decimal("1.5") and window.reserved == 0
    # The deleted limit no longer applies to new calls.
    assert budget.applicable_limits(db, scope) == []
    with db.begin_nested():
        assert (
            budget.reserve(
                db, scope=scope, call_key="next", amount=Decimal("99"), job_id=None, hold_seconds=60
            )
            == []
        )


def alerts(db, org) -> list[tuple[str, float]]:
    rows = db.scalars(
        sa.select(Notification)
        .where(Notification.organization_id == org.id)
        .order_by(Notification.created_at, Notification.id)
    )
    return [(n.severity, n.data["percentage"]) for n in rows]


def test_limits_alert_when_created_or_changed_past_a_level(client, db, tenant):
    org, h = tenant["org"], tenant["headers"]
    factories.usage_record(db, org, cost="9", created_at=day_start())
    db.commit()

    limit = create(client, h, amount_usd="10", alert_threshold=0.8, action_on_exceed="warn")
    assert alerts(db, org) == [("warning", 0.9)]
    note = db.scalar(sa.select(Notification).where(Notification.organization_id == org.id))
    assert note.data["level"] == "warning"
    assert note.data["scope"] == {"type": "organization", "id": None, "name": "Acme"}
    assert note.data["current"] == "9.00" and note.data["limit"] == "10.00"
    assert note.data["message"] == "Organization 'Acme' at 90% of daily limit 'Daily Global Limit'"

    url = f"{URL}/{limit['id']}"
    # Seen again at the same level: still one alert per window.
    assert client.patch(url, json={"name": "Daily Global Limit"}, headers=h).status_code == 200
    assert alerts(db, org) == [("warning", 0.9)]
    # Raised far above spend, then lowered back: crossing the threshold again alerts again.
    assert client.patch(url, json={"amount_usd": "100"}, headers=h).status_code == 200
    assert alerts(db, org) == [("warning", 0.9)]
    assert client.patch(url, json={"amount_usd": "10"}, headers=h).status_code == 200
    assert alerts(db, org) == [("warning", 0.9), ("warning", 0.9)]
    assert client.patch(url, json={"amount_usd": "9"}, headers=h).status_code == 200
    assert alerts(db, org) == [("warning", 0.9), ("warning", 0.9), ("critical", 1.0)]
    # An inactive limit does not alert.
    quiet = create(client, h, amount_usd="1", is_active=False)
    assert quiet["percentage"] == 9.0
    assert len(alerts(db, org)) == 3


def test_a_reactivated_limit_counts_spend_made_while_it_was_off(client, db, tenant):
    org, h = tenant["org"], tenant["headers"]
    limit = create(client, h, amount_usd="10", is_active=False, action_on_exceed="warn")
    assert limit["spent"] == "0.00"
    # Calls while the limit is off are in the ledger but charge no window of it.
    factories.usage_record(db, org, cost="3.5", created_at=day_start())
    db.commit()
    stale = client.get(f"{URL}/{limit['id']}", headers=h).get_json()
    assert stale["spent"] == "0.00"
    back = client.patch(f"{URL}/{limit['id']}", json={"is_active": True}, headers=h).get_json()
    assert back["is_active"] is True and back["spent"] == "3.50"


def test_a_refused_hold_alerts_once_that_the_limit_is_reached(client, db, tenant):
    org, h = tenant["org"], tenant["headers"]
    factories.usage_record(db, org, cost="7", created_at=day_start())
    db.commit()
    limit = create(client, h, amount_usd="10", alert_threshold=0.9)
    assert alerts(db, org) == []  # 70%: under the threshold
    for attempt in range(3):
        with pytest.raises(budget.BudgetExceeded), db.begin_nested():
            budget.reserve(
                db, scope=budget.CallScope(org.id), call_key=f"big-{attempt}",
                amount=Decimal("3.5"), job_id=None, hold_seconds=60,
            )  # fmt: skip
        with db.begin_nested():
            budget.limit_reached_alert(db, limit_id=limit["id"])
    assert alerts(db, org) == [("critical", 0.7)]  # once per window, not per refusal


def test_a_hold_closes_once_and_a_refused_hold_leaves_no_row(client, db, tenant):
    from models import BudgetReservation

    org = tenant["org"]
    limit = create(client, tenant["headers"], amount_usd="1", action_on_exceed="block")
    scope = budget.CallScope(org.id)

    def window() -> BudgetWindow:
        row = db.scalar(
            sa.select(BudgetWindow).where(BudgetWindow.limit_id == uuid.UUID(limit["id"]))
        )
        db.refresh(row)
        return row

    def holds(key: str) -> list[str]:
        return [h.status for h in budget.holds_of(db, call_key=key)]

    with db.begin_nested():
        budget.reserve(
            db, scope=scope, call_key="a", amount=Decimal("0.6"), job_id=None, hold_seconds=60
        )
    assert (window().reserved, holds("a")) == (Decimal("0.6"), ["held"])
    # 0.6 held + 0.6 more would pass 1: refused, and no hold row is written for it.
    with pytest.raises(budget.BudgetExceeded), db.begin_nested():
        budget.reserve(
            db, scope=scope, call_key="b", amount=Decimal("0.6"), job_id=None, hold_seconds=60
        )
    assert holds("b") == [] and window().reserved == Decimal("0.6")

    with db.begin_nested():
        charged = budget.settle(db, call_key="a", actual=Decimal("0.25"))
    # 0.6 (all counted) is under the 0.8 alert level: deferred, the window row untouched.
    assert charged == [] and holds("a") == ["deferred"]
    assert (window().spent, window().reserved) == (Decimal("0.25"), 0)
    # Settled once: a second settle (a redelivery) and a release (the sweep) change nothing.
    with db.begin_nested():
        assert budget.settle(db, call_key="a", actual=Decimal("0.25")) == []
        budget.release(db, call_key="a")
    assert (window().spent, window().reserved, holds("a")) == (Decimal("0.25"), 0, ["deferred"])

    with db.begin_nested():
        budget.reserve(
            db, scope=scope, call_key="c", amount=Decimal("0.5"), job_id=None, hold_seconds=60
        )
        budget.release(db, call_key="c")
        budget.release(db, call_key="c")
    assert (window().spent, window().reserved, holds("c")) == (Decimal("0.25"), 0, ["released"])
    # The reservation applied the deferred settlement to the window's columns.
    assert holds("a") == ["settled"]
    assert (window().applied_spent, window().applied_reserved) == (Decimal("0.25"), 0)
    # Rows of this limit's window only: end-to-end tests leave committed holds of their own.
    own_holds = sa.select(sa.func.count()).where(BudgetReservation.window_id == window().id)
    assert db.scalar(own_holds) == 2


def test_a_spent_block_limit_refuses_submissions_and_only_while_it_applies(client, db, tenant):
    """The token check reads whether the organization has a block limit; a submission
    reads the limits only then: every change below applies from the next request."""
    org, h = tenant["org"], tenant["headers"]
    factories.usage_record(db, org, cost="1.00", created_at=day_start())
    db.commit()
    task = {"description": "Tally the invoices"}

    def submit() -> int:
        return client.post("/api/v1/tasks", json=task, headers=h).status_code

    assert submit() == 202  # no limit at all
    create(client, h, amount_usd="0.50", action_on_exceed="warn")
    assert submit() == 202  # a spent warn limit only alerts
    roomy = create(client, h, amount_usd="5", name="roomy block")
    assert submit() == 202  # a block limit with room left
    spent = create(client, h, amount_usd="0.50", name="spent block")
    refused = client.post("/api/v1/tasks", json=task, headers=h)
    assert refused.status_code == 402, refused.get_json()
    assert refused.get_json()["error"]["code"] == "BUDGET_EXCEEDED"
    assert refused.get_json()["error"]["details"][0]["limit_id"] == spent["id"]
    switched = client.patch(f"{URL}/{spent['id']}", json={"is_active": False}, headers=h)
    assert switched.status_code == 200, switched.get_json()
    assert submit() == 202
    client.patch(f"{URL}/{spent['id']}", json={"is_active": True}, headers=h)
    assert submit() == 402
    assert client.delete(f"{URL}/{spent['id']}", headers=h).status_code == 204
    assert client.delete(f"{URL}/{roomy['id']}", headers=h).status_code == 204
    assert submit() == 202
    # Another organization's spent block limit is not this one's.
    factories.usage_record(db, tenant["other_org"], cost="1.00", created_at=day_start())
    other = factories.budget_limit(db, tenant["other_org"], amount_usd=Decimal("0.5"))
    db.commit()
    assert other.action_on_exceed == "block"
    assert submit() == 202


def test_the_token_check_says_whether_the_organization_has_a_block_limit(db, sessions, tenant):
    from orchestration import accounts

    def live(user) -> accounts.LiveSession:  # noqa: ANN001
        family = uuid.uuid4()
        found = accounts.live_session(sessions, user_id=user.id, jti="j", family_id=family)
        assert found is not None
        return found

    assert live(tenant["admin"]).has_block_limits is False
    assert live(tenant["outsider"]).has_block_limits is True  # foreign_limit: block, active
    limit = factories.budget_limit(db, tenant["org"], action_on_exceed="pause")
    db.commit()
    assert live(tenant["admin"]).has_block_limits is False
    limit.action_on_exceed = "block"
    db.commit()
    assert live(tenant["admin"]).has_block_limits is True
    limit.deleted_at = limit.created_at
    db.commit()
    assert live(tenant["admin"]).has_block_limits is False


def test_the_hot_statements_are_prepared_once_per_connection(database_url):
    """On PostgreSQL a hold and a settlement are server-side prepared statements, prepared
    on a connection's first use: they survive a rollback, and a connection the pool
    replaces (its record's info cleared) prepares them again."""
    from sqlalchemy.orm import Session

    from models import prepared as prepared_statements

    engine = sa.create_engine(database_url, pool_size=1, max_overflow=0)
    prepared = sa.text("SELECT name FROM pg_prepared_statements WHERE name LIKE 'baton_%'")

    def pair(conn: sa.Connection, key: str, amount: str) -> set[str]:
        with Session(bind=conn) as s:
            org = factories.organization(s)
            factories.budget_limit(s, org, amount_usd="1")
            scope = budget.CallScope(org.id)
            budget.reserve(
                s, scope=scope, call_key=key, amount=Decimal(amount), job_id=None, hold_seconds=60
            )
            budget.settle(s, call_key=key, actual=Decimal(amount))
            names = set(s.scalars(prepared))
            s.rollback()  # nothing of this test is committed
        return names

    try:
        with engine.connect() as conn:
            first = pair(conn, "prep-a", "0.4")
            # (A new limit's window is created at its first hold: that hold takes the
            # one-limit statement, prepared too.)
            hot = {
                prepared_statements._prepared(statement, engine.dialect)[0]  # type: ignore[index]
                for statement in (
                    budget._reserve_statement(False, False, False),
                    budget._settle_statement(),
                )
            }
            assert hot <= first
            # Refused (more than the limit) and rolled back: the statements stay prepared,
            # with the refusal's exact retry, prepared at its first use.
            with pytest.raises(budget.BudgetExceeded):
                pair(conn, "prep-b", "2")
            conn.rollback()
            exact = prepared_statements._prepared(budget._exact_hold_statement(), engine.dialect)
            assert pair(conn, "prep-c", "0.4") == first | {exact[0]}  # type: ignore[index]
            conn.invalidate()  # the next use is a new server session: prepared again
            assert pair(conn, "prep-d", "0.4") == first
    finally:
        engine.dispose()


def test_settle_with_a_scope_charges_every_applicable_window_once(db, tenant):
    """The engine's settlement (with the call's scope, one statement on PostgreSQL): the
    held window settled, a limit's existing window the call holds nothing on charged, a
    limit with no window yet given one from the ledger, nothing charged twice."""
    org = tenant["org"]
    scope = budget.CallScope(org.id, tenant["project"].id)
    held_limit = factories.budget_limit(db, org, name="held", amount_usd="100")
    db.commit()
    with db.begin_nested():
        holds = budget.reserve(
            db, scope=scope, call_key="scoped", amount=Decimal("2"), job_id=None, hold_seconds=60
        )
    assert len(holds) == 1
    # Limits that appear while the call is in flight: one whose window exists (another
    # call made it), one with none yet, one of another project (not applicable).
    with_window = factories.budget_limit(db, org, name="with window", period="total")
    budget.current_window(db, with_window)
    fresh = factories.budget_limit(
        db, org, name="fresh", scope_type="project", scope_id=tenant["project"].id,
        period="monthly",
    )  # fmt: skip
    other = factories.budget_limit(
        db, org, name="other", scope_type="project", scope_id=uuid.uuid4()
    )
    budget.current_window(db, other)
    db.commit()

    def spent(limit) -> Decimal:
        window = budget.current_window(db, limit)
        db.refresh(window)
        return window.spent

    with db.begin_nested():
        factories.usage_record(db, org, cost="1.5", project_id=tenant["project"].id)
        charged = budget.settle(db, call_key="scoped", actual=Decimal("1.5"), scope=scope)
    db.commit()
    # The held window's settlement deferred; the fresh window created with the charge in it.
    assert [w.limit_id for w in charged] == [with_window.id]
    assert (spent(held_limit), spent(with_window), spent(fresh)) == (Decimal("1.5"),) * 3
    assert spent(other) == 0
    assert [h.status for h in budget.holds_of(db, call_key="scoped")] == ["deferred"]
    # Settled again (never by the engine, whose ledger key stops it): the held window,
    # deferred, is not charged as unheld.
    with db.begin_nested():
        again = budget.settle(db, call_key="scoped", actual=Decimal("0"), scope=scope)
    assert again == []
    assert (spent(held_limit), spent(with_window), spent(fresh)) == (Decimal("1.5"),) * 3
