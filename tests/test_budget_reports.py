"""Spending reports and analytics: math against ledger rows, UTC edges, zero buckets,
tenant scoping, bad input; today's stats on project and agent payloads."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from orchestration import budget
from tests import factories
from tests.test_auth import assert_error

B = "/api/v1/budget"
US = timedelta(microseconds=1)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture
def tenant(db, app):
    org = factories.organization(db, name="Acme")
    user = factories.user(db, org, role="viewer")
    shop = factories.project(db, org, name="Shop")
    blog = factories.project(db, org, name="Blog")
    coder = factories.agent(db, org, name="Coder", type="coder")
    tester = factories.agent(db, org, name="Tester", type="tester")
    other_org = factories.organization(db)
    db.commit()
    return {
        "org": org,
        "user": user,
        "shop": shop,
        "blog": blog,
        "coder": coder,
        "tester": tester,
        "other_org": other_org,
        "foreign_project": factories.project(db, other_org, name="Foreign"),
        "headers": factories.auth_headers(app, user),
    }


def get(client, tenant, url):
    response = client.get(url, headers=tenant["headers"])
    assert response.status_code == 200, response.get_json()
    return response.get_json()


# -- summary -------------------------------------------------------------------------------


def test_summary_against_the_ledger_and_organization_limits(client, db, tenant):
    org, shop, coder = tenant["org"], tenant["shop"], tenant["coder"]
    day = budget.window_bounds("daily")[0]
    week = budget.window_bounds("weekly")[0]
    month = budget.window_bounds("monthly")[0]
    rows = [
        (day, "0.10", {}),
        (day - US, "0.20", {}),
        (week, "0.40", {}),
        (week - US, "0.80", {}),
        (month, "1.60", {}),
        (month - US, "3.20", {}),
        (day, "0.85", {"project_id": shop.id}),
        (day, "0.10", {"agent_id": coder.id}),
    ]
    for created_at, cost, extra in rows:
        factories.usage_record(db, org, cost=cost, created_at=created_at, **extra)
    factories.usage_record(db, tenant["other_org"], cost="100", created_at=day)
    factories.budget_limit(db, org, name="loose", amount_usd="100", period="daily")
    factories.budget_limit(db, org, name="tight", amount_usd="50", period="daily")
    factories.budget_limit(db, org, name="month", scope_type="global", amount_usd="1000", period="monthly")  # fmt: skip
    factories.budget_limit(db, org, name="off", amount_usd="1", period="weekly", is_active=False)
    factories.budget_limit(db, org, name="gone", amount_usd="1", period="weekly", deleted_at=day)
    factories.budget_limit(
        db, org, name="shop daily", scope_type="project", scope_id=shop.id, amount_usd="1",
        alert_threshold="0.8", period="daily",
    )  # fmt: skip
    factories.budget_limit(
        db, org, name="coder daily", scope_type="agent", scope_id=coder.id, amount_usd="0.05",
        period="daily",
    )  # fmt: skip
    factories.budget_limit(db, tenant["other_org"], name="foreign", amount_usd="1")
    db.commit()

    def spent_since(start):
        return sum((Decimal(c) for t, c, _ in rows if t >= start), Decimal(0))

    body = get(client, tenant, f"{B}/summary")
    assert body["currency"] == "USD"
    assert Decimal(body["today"]["spent"]) == spent_since(day)
    assert Decimal(body["week"]["spent"]) == spent_since(week)
    assert Decimal(body["month"]["spent"]) == spent_since(month)
    assert body["today"]["limit"] == "50.00"  # the tightest organization daily limit
    assert body["today"]["percentage"] == float(round(spent_since(day) / 50, 4))
    assert body["week"]["limit"] is None and body["week"]["percentage"] is None
    assert body["month"]["limit"] == "1000.00"
    assert body["today"]["start"].startswith(day.date().isoformat())
    assert sorted(limit["name"] for limit in body["limits"]) == ["loose", "month", "tight"]
    assert [(a["type"], a["message"]) for a in body["alerts"]] == [
        ("critical", "Agent 'Coder' at 200% of daily limit 'coder daily'"),
        ("warning", "Project 'Shop' at 85% of daily limit 'shop daily'"),
    ]
    shop_alert = body["alerts"][1]
    assert shop_alert["scope"] == {"type": "project", "id": str(shop.id), "name": "Shop"}
    assert shop_alert["current"] == "0.85" and shop_alert["limit"] == "1.00"
    assert shop_alert["percentage"] == 0.85 and shop_alert["level"] == "warning"


def test_summary_of_an_organization_with_no_spend(client, tenant):
    body = get(client, tenant, f"{B}/summary")
    for period in ("today", "week", "month"):
        assert body[period]["spent"] == "0.00" and body[period]["limit"] is None
    assert body["alerts"] == [] and body["limits"] == []


# -- by project / by agent -----------------------------------------------------------------


def test_by_project_and_by_agent_over_whole_utc_days(client, db, tenant):
    org, shop, blog = tenant["org"], tenant["shop"], tenant["blog"]
    coder, tester = tenant["coder"], tenant["tester"]
    start, end = at("2025-03-01T00:00:00"), at("2025-04-01T00:00:00")
    for created_at, cost, extra in [
        (start, "1.00", {"project_id": shop.id, "agent_id": coder.id}),
        (end - US, "2.00", {"project_id": shop.id, "agent_id": tester.id}),
        (start + timedelta(days=3), "0.50", {"project_id": blog.id, "agent_id": coder.id}),
        (start + timedelta(days=4), "0.25", {}),
        (start - US, "10.00", {"project_id": shop.id}),  # the day before
        (end, "20.00", {"project_id": blog.id}),  # the day after
    ]:
        factories.usage_record(
            db, org, cost=cost, created_at=created_at, prompt_tokens=10, completion_tokens=5,
            **extra,
        )  # fmt: skip
    factories.usage_record(
        db, tenant["other_org"], cost="7", created_at=start, project_id=tenant["foreign_project"].id
    )
    db.commit()

    query = "start_date=2025-03-01&end_date=2025-03-31"
    body = get(client, tenant, f"{B}/by-project?{query}")
    assert body["start_date"] == "2025-03-01" and body["end_date"] == "2025-03-31"
    assert body["total_spent"] == "3.75"
    assert [(i["project_name"], i["spent"], i["calls"]) for i in body["items"]] == [
        ("Shop", "3.00", 2),
        ("Blog", "0.50", 1),
        (None, "0.25", 1),  # calls with no project, so the rows add up
    ]
    assert body["items"][0]["project_id"] == str(shop.id)
    assert body["items"][0]["total_tokens"] == 30 and body["items"][0]["prompt_tokens"] == 20

    body = get(client, tenant, f"{B}/by-agent?{query}")
    assert [(i["agent_name"], i["agent_type"], i["spent"]) for i in body["items"]] == [
        ("Tester", "tester", "2.00"),
        ("Coder", "coder", "1.50"),
        (None, None, "0.25"),
    ]
    one_day = get(client, tenant, f"{B}/by-project?start_date=2025-03-31&end_date=2025-03-31")
    assert [(i["project_name"], i["spent"]) for i in one_day["items"]] == [("Shop", "2.00")]


def test_by_project_defaults_to_this_month(client, db, tenant):
    month = budget.window_bounds("monthly")[0]
    factories.usage_record(
        db, tenant["org"], cost="1", created_at=month, project_id=tenant["shop"].id
    )
    factories.usage_record(
        db, tenant["org"], cost="5", created_at=month - US, project_id=tenant["shop"].id
    )
    db.commit()
    body = get(client, tenant, f"{B}/by-project")
    assert body["start_date"] == month.date().isoformat()
    assert body["total_spent"] == "1.00"


@pytest.mark.parametrize("path", ["by-project", "by-agent"])
def test_by_dimension_bad_dates(client, tenant, path):
    h = tenant["headers"]
    url = f"{B}/{path}"
    assert_error(
        client.get(f"{url}?start_date=2025-02-30", headers=h), 422, "VALIDATION_ERROR", "start_date"
    )
    assert_error(
        client.get(f"{url}?end_date=yesterday", headers=h), 422, "VALIDATION_ERROR", "end_date"
    )
    assert_error(
        client.get(f"{url}?start_date=2025-03-02&end_date=2025-03-01", headers=h),
        422,
        "VALIDATION_ERROR",
        "end_date",
    )


# -- timeline ------------------------------------------------------------------------------


def timeline(client, tenant, query):
    return get(client, tenant, f"{B}/timeline?{query}")


def test_timeline_by_day_has_utc_edges_and_zero_buckets(client, db, tenant):
    org = tenant["org"]
    for created_at, cost in [
        (at("2025-03-30T00:00:00"), "1.00"),
        (at("2025-03-30T23:59:59.999999"), "2.00"),
        (at("2025-03-31T00:00:00"), "4.00"),
        (at("2025-04-02T12:00:00"), "8.00"),
        (at("2025-03-29T23:59:59.999999"), "16.00"),  # before the range
        (at("2025-04-03T00:00:00"), "32.00"),  # after it
    ]:
        factories.usage_record(db, org, cost=cost, created_at=created_at)
    factories.usage_record(db, tenant["other_org"], cost="64", created_at=at("2025-03-31T00:00:00"))
    db.commit()

    body = timeline(client, tenant, "start_date=2025-03-30&end_date=2025-04-02&granularity=day")
    assert body["granularity"] == "day" and body["total_spent"] == "15.00"
    assert [(b["date"], b["spent"], b["calls"]) for b in body["items"]] == [
        ("2025-03-30", "3.00", 2),
        ("2025-03-31", "4.00", 1),
        ("2025-04-01", "0.00", 0),  # a day with no spend is still a bucket
        ("2025-04-02", "8.00", 1),
    ]
    assert body["items"][0]["start_date"] == body["items"][0]["end_date"] == "2025-03-30"


def test_timeline_by_iso_week_and_month_clips_to_the_range(client, db, tenant):
    org = tenant["org"]
    for created_at, cost in [
        (at("2025-03-04T10:00:00"), "100"),  # Tuesday: same ISO week as the start, before it
        (at("2025-03-05T00:00:00"), "1"),  # Wednesday: the first day of the range
        (at("2025-03-09T23:59:59"), "2"),  # Sunday: still the first week
        (at("2025-03-10T00:00:00"), "4"),  # Monday: the second week
        (at("2025-03-18T23:00:00"), "8"),  # Tuesday: the last day of the range
        (at("2025-03-19T00:00:00"), "200"),  # after the range
    ]:
        factories.usage_record(db, org, cost=cost, created_at=created_at)
    db.commit()

    weeks = timeline(client, tenant, "start_date=2025-03-05&end_date=2025-03-18&granularity=week")
    assert [(b["date"], b["start_date"], b["end_date"], b["spent"]) for b in weeks["items"]] == [
        ("2025-03-03", "2025-03-05", "2025-03-09", "3.00"),
        ("2025-03-10", "2025-03-10", "2025-03-16", "4.00"),
        ("2025-03-17", "2025-03-17", "2025-03-18", "8.00"),
    ]
    months = timeline(client, tenant, "start_date=2025-01-15&end_date=2025-04-10&granularity=month")
    assert [(b["date"], b["start_date"], b["end_date"], b["spent"]) for b in months["items"]] == [
        ("2025-01-01", "2025-01-15", "2025-01-31", "0.00"),
        ("2025-02-01", "2025-02-01", "2025-02-28", "0.00"),
        ("2025-03-01", "2025-03-01", "2025-03-31", "315.00"),
        ("2025-04-01", "2025-04-01", "2025-04-10", "0.00"),
    ]


def test_timeline_defaults_to_the_last_30_days_by_day(client, db, tenant):
    day = budget.window_bounds("daily")[0]
    factories.usage_record(db, tenant["org"], cost="1.5", created_at=day)
    db.commit()
    body = timeline(client, tenant, "")
    assert len(body["items"]) == 30 and body["granularity"] == "day"
    assert body["end_date"] == day.date().isoformat()
    assert body["items"][-1]["spent"] == "1.50"


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("start_date=2025-13-01", "start_date"),
        ("start_date=2025-03-01&end_date=2025-02-28", "end_date"),
        ("start_date=2020-01-01&end_date=2025-01-01&granularity=day", "end_date"),
        ("start_date=2025-01-01&granularity=hour", "granularity"),
        ("granularity=fortnight", "granularity"),
    ],
)
def test_timeline_bad_input(client, tenant, query, field):
    assert_error(
        client.get(f"{B}/timeline?{query}", headers=tenant["headers"]),
        422,
        "VALIDATION_ERROR",
        field,
    )


def test_timeline_long_ranges_are_fine_at_coarser_granularity(client, tenant):
    body = timeline(client, tenant, "start_date=2015-01-01&end_date=2024-12-31&granularity=month")
    assert len(body["items"]) == 120 and body["total_spent"] == "0.00"


# -- analytics -----------------------------------------------------------------------------


def test_agent_analytics(client, db, tenant):
    org, coder, tester = tenant["org"], tenant["coder"], tenant["tester"]
    for cost in ("0.10", "0.20", "0.30"):
        factories.usage_record(db, org, cost=cost, agent_id=coder.id)
    for status in ("completed", "completed", "failed", "cancelled", "running"):
        factories.job(
            db, org, status=status, agent_id=coder.id, finished_at=at("2025-03-01T00:00:00")
        )
    factories.job(db, tenant["other_org"], status="failed")
    db.commit()

    body = get(client, tenant, "/api/v1/analytics/agents")
    agents = {a["name"]: a for a in body["agents"]}
    assert set(agents) == {"Coder", "Tester"}  # every agent, spend or not
    metrics = agents["Coder"]["metrics"]
    assert agents["Coder"]["type"] == "coder" and agents["Coder"]["id"] == str(coder.id)
    assert metrics["total_messages"] == 3
    assert metrics["total_cost"] == "0.60" and metrics["avg_cost_per_message"] == "0.20"
    assert metrics["tasks_completed"] == 2 and metrics["tasks_failed"] == 1
    assert metrics["success_rate"] == 0.6667
    idle = agents["Tester"]["metrics"]
    assert idle["total_messages"] == 0 and idle["total_cost"] == "0.00"
    assert idle["avg_cost_per_message"] is None and idle["success_rate"] is None
    assert tester.id  # listed although it never ran

    ranged = get(client, tenant, "/api/v1/analytics/agents?start_date=2025-04-01")
    coder_ranged = next(a for a in ranged["agents"] if a["name"] == "Coder")["metrics"]
    assert coder_ranged["tasks_completed"] == 0  # finished before the range
    assert coder_ranged["total_messages"] == 3  # the calls are from today


def test_usage_analytics_in_seed_003_shape(client, db, tenant):
    org, shop, blog = tenant["org"], tenant["shop"], tenant["blog"]
    day = budget.window_bounds("daily")[0]
    job = factories.job(
        db, org, status="completed", project_id=shop.id,
        started_at=day, finished_at=day + timedelta(seconds=2),
    )  # fmt: skip
    factories.job(db, org, status="completed", project_id=shop.id, started_at=day, finished_at=day + timedelta(seconds=4))  # fmt: skip
    factories.job(db, org, status="failed", project_id=shop.id)
    factories.job(db, org, status="failed", project_id=blog.id)
    factories.job(db, org, status="cancelled")
    factories.job(db, org, status="completed", created_at=day - timedelta(days=5))  # outside
    step_a = factories.step(db, job, execution_time_ms=100)
    step_b = factories.step(db, factories.job(db, org, status="running"), execution_time_ms=300)
    factories.usage_record(db, org, created_at=day, step_id=step_a.id, cost="0.5", prompt_tokens=10, completion_tokens=20)  # fmt: skip
    factories.usage_record(db, org, created_at=day + timedelta(minutes=59), step_id=step_b.id, cost="0.25", prompt_tokens=1, completion_tokens=2)  # fmt: skip
    factories.usage_record(
        db, org, created_at=day - US, cost="1", prompt_tokens=5, completion_tokens=5
    )
    factories.usage_record(db, tenant["other_org"], created_at=day, cost="9")
    db.commit()

    body = get(client, tenant, "/api/v1/analytics/usage?days=2")
    assert body["days"] == 2 and body["granularity"] == "day"
    yesterday = (day - timedelta(days=1)).date().isoformat()
    assert body["api_usage"] == [
        {"date": yesterday, "requests": 1, "tokens": 10, "cost": "1.00", "avg_response_time": None},
        {"date": day.date().isoformat(), "requests": 2, "tokens": 33, "cost": "0.75", "avg_response_time": 200},
    ]  # fmt: skip
    assert body["runs_summary"] == {
        "total_runs": 6,
        "completed_runs": 2,
        "failed_runs": 2,
        "cancelled_runs": 1,
        "avg_execution_time": 3000,
        "success_rate": 50.0,
    }
    assert body["top_projects"] == [
        {"project_id": str(shop.id), "project_name": "Shop", "run_count": 3, "success_rate": 66.7},
        {"project_id": str(blog.id), "project_name": "Blog", "run_count": 1, "success_rate": 0.0},
    ]
    assert body["integration_usage"] == {}

    hourly = get(client, tenant, "/api/v1/analytics/usage?days=1&granularity=hour")
    assert len(hourly["api_usage"]) == 24
    first = hourly["api_usage"][0]
    assert first["date"] == day.isoformat().replace("+00:00", "Z")
    assert first["requests"] == 2 and first["cost"] == "0.75"
    assert all(b["requests"] == 0 for b in hourly["api_usage"][1:])


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("days=0", "days"),
        ("days=367", "days"),
        ("days=ten", "days"),
        ("granularity=minute", "granularity"),
        ("days=32&granularity=hour", "days"),  # more than 744 hourly buckets
    ],
)
def test_usage_analytics_bad_input(client, tenant, query, field):
    assert_error(
        client.get(f"/api/v1/analytics/usage?{query}", headers=tenant["headers"]),
        422,
        "VALIDATION_ERROR",
        field,
    )


def test_reports_need_a_token(client):
    for path in (f"{B}/summary", f"{B}/by-project", f"{B}/timeline", "/api/v1/analytics/agents"):
        assert_error(client.get(path), 401, "AUTHENTICATION_REQUIRED")


# -- stats on project and agent payloads ---------------------------------------------------


def test_projects_and_agents_carry_todays_spend(client, db, tenant):
    org, shop, coder = tenant["org"], tenant["shop"], tenant["coder"]
    day = budget.window_bounds("daily")[0]
    factories.usage_record(db, org, cost="0.50", created_at=day, project_id=shop.id, agent_id=coder.id, prompt_tokens=7, completion_tokens=3)  # fmt: skip
    factories.usage_record(db, org, cost="0.25", created_at=day, project_id=shop.id)
    factories.usage_record(db, org, cost="9", created_at=day - US, project_id=shop.id, agent_id=coder.id)  # fmt: skip
    db.commit()

    projects = {p["name"]: p["stats"] for p in get(client, tenant, "/api/v1/projects")["items"]}
    assert projects["Shop"]["today_cost"] == "0.75" and projects["Shop"]["calls_today"] == 2
    assert projects["Blog"] == {
        "today_cost": "0.00",
        "calls_today": 0,
        "tokens_today": 0,
        "open_issues": 0,
        "active_conversations": 0,
    }
    one = get(client, tenant, f"/api/v1/projects/{shop.id}")["stats"]
    assert one["today_cost"] == "0.75" and one["tokens_today"] == 10 + 150

    agents = {a["name"]: a["stats"] for a in get(client, tenant, "/api/v1/agents")["items"]}
    assert agents["Coder"] == {"messages_today": 1, "cost_today": "0.50", "tokens_today": 10}
    assert agents["Tester"]["cost_today"] == "0.00"
    assert get(client, tenant, f"/api/v1/agents/{coder.id}")["stats"]["cost_today"] == "0.50"


def test_list_stats_take_one_query_whatever_the_page_size(client, db, tenant, engine):
    """The stats of a page come from one grouped query, not one query per row."""

    def statements(url: str) -> int:
        seen = []

        def count(conn, cursor, statement, *args):  # type: ignore[no-untyped-def]
            seen.append(statement)

        sa.event.listen(engine, "before_cursor_execute", count)
        try:
            assert client.get(url, headers=tenant["headers"]).status_code == 200
        finally:
            sa.event.remove(engine, "before_cursor_execute", count)
        return len([s for s in seen if "usage_records" in s])

    few = (statements("/api/v1/projects"), statements("/api/v1/agents"))
    for index in range(6):
        project = factories.project(db, tenant["org"], name=f"p{index}")
        agent = factories.agent(db, tenant["org"], name=f"a{index}")
        factories.usage_record(db, tenant["org"], project_id=project.id, agent_id=agent.id)
    db.commit()
    assert (statements("/api/v1/projects"), statements("/api/v1/agents")) == few == (1, 1)
    assert uuid.UUID(str(tenant["org"].id))
