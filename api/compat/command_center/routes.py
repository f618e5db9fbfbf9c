"""Seed 001's endpoints: each view maps the document's request, calls the one
orchestration function the canonical view calls, and shapes the document's answer."""

from __future__ import annotations

import uuid
from typing import Any

from flask import request
from flask.views import MethodView

from api.auth.routes import login_attempts, refresh_claims, two_factor_attempts
from api.auth.tokens import TEMP_TOKEN_SECONDS, read_temp_token, temp_token_for
from api.budget.schemas import LimitCreateSchema, LimitUpdateSchema
from api.common.openapi import answers
from api.compat import core
from api.compat.command_center import DIALECT
from api.compat.command_center import schemas as s
from api.project_tasks.schemas import ProjectTaskCreateSchema, present_task
from api.security import current_principal, requires, sessions
from orchestration import (
    accounts,
    agents,
    budget_limits,
    conversations,
    emergency,
    github,
    notifications,
    project_work,
    projects,
    reports,
    two_factor,
)

blp = DIALECT.blueprint
issue = core.token_issuer()  # the canonical token pair: one login for every API


def _tokens(signin: Any) -> dict[str, Any]:
    if isinstance(signin, accounts.SecondFactorRequired):
        purpose = "setup" if signin.setup else "verify"
        return {
            "requires_2fa": True,
            "temp_token": temp_token_for(user_id=str(signin.user.id), purpose=purpose),
            "expires_in": TEMP_TOKEN_SECONDS,
        }
    return {
        "access_token": signin.tokens.access_token,
        "refresh_token": signin.tokens.refresh_token,
        "token_type": "bearer",
        "expires_in": signin.tokens.expires_in,
        "requires_2fa": False,
    }


# -- authentication -------------------------------------------------------------------------


@blp.route("/auth/login")
class Login(MethodView):
    @login_attempts
    @blp.arguments(s.CCLoginSchema)
    @blp.response(200, s.CCTokenSchema)
    @answers(401, "Wrong username or password.")
    @blp.doc(security=[])
    def post(self, data: dict[str, Any]):
        """Username (or email) and password -> tokens, or ``requires_2fa`` and a temp_token."""
        username = data["username"]
        signin = accounts.login(
            sessions(),
            email=username if "@" in username else None,
            username=None if "@" in username else username,
            password=data["password"],
            issue=issue,
        )
        return _tokens(signin)


@blp.route("/auth/2fa/verify")
class TwoFactorVerify(MethodView):
    @two_factor_attempts
    @blp.arguments(s.CCTwoFactorVerifySchema)
    @blp.response(200, s.CCTokenSchema)
    @answers(401, "The temp_token or the code is wrong or expired.")
    @blp.doc(security=[])
    def post(self, data: dict[str, Any]):
        """The login's temp_token and a TOTP code (or a recovery code) -> the tokens."""
        temp = read_temp_token(data["temp_token"], purposes=("verify",))
        code = data["code"]
        totp = code if code.isdigit() else None
        return _tokens(
            two_factor.verify_login(
                sessions(),
                user_id=temp.user_id,
                temp_token=(temp.jti, temp.expires_at),
                issue=issue,
                code=totp,
                recovery_code=None if totp else code,
            )
        )


@blp.route("/auth/refresh")
class Refresh(MethodView):
    @blp.arguments(s.CCRefreshSchema)
    @blp.response(200, s.CCTokenSchema)
    @answers(401, "The refresh token is invalid, expired or already spent.")
    @blp.doc(security=[])
    def post(self, data: dict[str, Any]):
        """A new token pair; a spent refresh token revokes its whole login."""
        claims = refresh_claims(data["refresh_token"])
        return _tokens(accounts.refresh(sessions(), jti=claims["jti"], issue=issue))


# -- projects -------------------------------------------------------------------------------


@blp.route("/projects")
class Projects(MethodView):
    @requires()
    @blp.arguments(s.CCProjectListArgsSchema, location="query")
    @blp.response(200, s.CCProjectListSchema)
    def get(self, args: dict[str, Any]):
        """The organization's projects (``is_active``), newest first."""
        active = args.get("is_active")
        status = None if active is None else (["active"] if active else ["completed", "archived",
                                                                         "failed"])  # fmt: skip
        page = projects.list_projects(
            sessions(), principal=current_principal(),
            filters=projects.ProjectFilters(status=status), page=s.page_request(args),
        )  # fmt: skip
        return s.paged(page)

    @requires("project:write")
    @blp.arguments(s.CCProjectCreateSchema)
    @blp.response(201, s.CCProjectSchema)
    def post(self, data: dict[str, Any]):
        """Create a project (its GitHub repository and App installation)."""
        return projects.create_project(
            sessions(), principal=current_principal(), data=s.project_changes(data)
        )


@blp.route("/projects/<uuid:project_id>")
class ProjectById(MethodView):
    @requires()
    @blp.response(200, s.CCProjectSchema)
    def get(self, project_id: uuid.UUID):
        """A project with its stats."""
        return projects.get_project(
            sessions(), principal=current_principal(), project_id=project_id
        )

    @requires("project:write")
    @blp.arguments(s.CCProjectUpdateSchema)
    @blp.response(200, s.CCProjectSchema)
    def patch(self, changes: dict[str, Any], project_id: uuid.UUID):
        """Update some fields (``is_active: false`` archives it)."""
        return projects.update_project(
            sessions(), principal=current_principal(), project_id=project_id,
            changes=s.project_changes(changes),
        )  # fmt: skip

    @requires("project:write")
    @blp.response(204)
    def delete(self, project_id: uuid.UUID):
        """Delete the project."""
        projects.delete_project(sessions(), principal=current_principal(), project_id=project_id)


# -- agents ---------------------------------------------------------------------------------


@blp.route("/projects/<uuid:project_id>/agents")
class ProjectAgents(MethodView):
    @requires()
    @blp.arguments(s.PageArgsSchema, location="query")
    @blp.response(200, s.CCAgentListSchema)
    def get(self, args: dict[str, Any], project_id: uuid.UUID):
        """The project's agents with today's stats."""
        page = agents.list_project_agents(
            sessions(), principal=current_principal(), project_id=project_id,
            filters=agents.AgentFilters(), page=s.page_request(args),
        )  # fmt: skip
        return s.paged(page)

    @requires("agent:write")
    @blp.arguments(s.CCAgentCreateSchema)
    @blp.response(201, s.CCAgentSchema)
    def post(self, data: dict[str, Any], project_id: uuid.UUID):
        """Create an agent (architect, coder, tester, reviewer or orchestrator)."""
        return agents.create_agent(
            sessions(), principal=current_principal(),
            data={**s.agent_data(data), "project_id": project_id},
        )  # fmt: skip


@blp.route("/projects/<uuid:project_id>/agents/<uuid:agent_id>")
class ProjectAgentById(MethodView):
    @requires("agent:write")
    @blp.arguments(s.CCAgentUpdateSchema)
    @blp.response(200, s.CCAgentSchema)
    def patch(self, changes: dict[str, Any], project_id: uuid.UUID, agent_id: uuid.UUID):
        """Update the agent's configuration (``model_config`` keys merge)."""
        return agents.update_project_agent(
            sessions(), principal=current_principal(), project_id=project_id,
            agent_id=agent_id, changes=s.agent_data(changes),
        )  # fmt: skip


@blp.route("/projects/<uuid:project_id>/agents/<uuid:agent_id>/reset")
class ResetAgent(MethodView):
    @requires("agent:write")
    @blp.response(200, s.CCResetSchema)
    def post(self, project_id: uuid.UUID, agent_id: uuid.UUID):
        """End the agent's conversations and clear its memory."""
        ended = conversations.reset_project_agent(
            sessions(), principal=current_principal(), project_id=project_id, agent_id=agent_id
        )
        return {"agent_id": agent_id, "conversations_ended": ended, "memory_cleared": True}


# -- conversations --------------------------------------------------------------------------


@blp.route("/projects/<uuid:project_id>/conversations")
class ProjectConversations(MethodView):
    @requires("job:read")
    @blp.arguments(s.CCConversationListArgsSchema, location="query")
    @blp.response(200, s.CCConversationListSchema)
    def get(self, args: dict[str, Any], project_id: uuid.UUID):
        """The project's conversations (``type``, ``status``), most recently active first."""
        page = conversations.list_conversations(
            sessions(), principal=current_principal(), page=s.page_request(args),
            project_id=project_id, type=args.get("type"), status=args.get("status"),
        )  # fmt: skip
        return s.paged(page)

    @requires("job:create")
    @blp.arguments(s.CCConversationCreateSchema)
    @blp.response(201, s.CCConversationSchema)
    def post(self, data: dict[str, Any], project_id: uuid.UUID):
        """Start a conversation; the first of ``agent_ids`` answers."""
        return conversations.create_conversation(
            sessions(), principal=current_principal(), agent_ids=data["agent_ids"],
            project_id=project_id, title=data.get("title"), type=data["type"],
            issue_id=data.get("issue_id"),
        )  # fmt: skip


@blp.route("/projects/<uuid:project_id>/conversations/<uuid:conversation_id>")
class ProjectConversationById(MethodView):
    @requires("job:read")
    @blp.arguments(s.CCConversationArgsSchema, location="query")
    @blp.response(200, s.CCConversationSchema)
    def get(self, args: dict[str, Any], project_id: uuid.UUID, conversation_id: uuid.UUID):
        """The conversation with a page of messages (``before`` a message id, ``limit``;
        ``has_more``)."""
        return conversations.get_conversation(
            sessions(), principal=current_principal(), conversation_id=conversation_id,
            project_id=project_id, before=args.get("before"), limit=args["limit"],
        )  # fmt: skip


@blp.route("/projects/<uuid:project_id>/conversations/<uuid:conversation_id>/messages")
class ProjectMessages(MethodView):
    @requires("job:create")
    @blp.arguments(s.CCMessageCreateSchema)
    @blp.response(201, s.CCPostedSchema)
    @answers(402, "A blocking budget limit is spent (BUDGET_EXCEEDED).")
    def post(self, data: dict[str, Any], project_id: uuid.UUID, conversation_id: uuid.UUID):
        """Send a message: answers it, with the agent's ``reply`` being written."""
        return conversations.post_message(
            sessions(), principal=current_principal(), conversation_id=conversation_id,
            project_id=project_id, content=data["content"], reply_to=data.get("reply_to"),
        )  # fmt: skip


@blp.route("/projects/<uuid:project_id>/conversations/<uuid:conversation_id>/pause")
class PauseConversation(MethodView):
    @requires("job:create")
    @blp.response(200, s.CCConversationSchema)
    def post(self, project_id: uuid.UUID, conversation_id: uuid.UUID):
        """Replies not yet started wait; messages are still taken."""
        return conversations.set_paused(
            sessions(), principal=current_principal(), conversation_id=conversation_id,
            project_id=project_id, paused=True,
        )  # fmt: skip


@blp.route("/projects/<uuid:project_id>/conversations/<uuid:conversation_id>/resume")
class ResumeConversation(MethodView):
    @requires("job:create")
    @blp.response(200, s.CCConversationSchema)
    def post(self, project_id: uuid.UUID, conversation_id: uuid.UUID):
        """The waiting messages are answered, in order."""
        return conversations.set_paused(
            sessions(), principal=current_principal(), conversation_id=conversation_id,
            project_id=project_id, paused=False,
        )  # fmt: skip


# -- issues ---------------------------------------------------------------------------------


@blp.route("/projects/<uuid:project_id>/issues")
class ProjectIssues(MethodView):
    @requires("job:read")
    @blp.arguments(s.CCIssueListArgsSchema, location="query")
    @blp.response(200, s.CCIssueListSchema)
    def get(self, args: dict[str, Any], project_id: uuid.UUID):
        """The project's GitHub issues (``state``: open|closed|all; ``label``)."""
        page = project_work.list_issues(
            sessions(), principal=current_principal(), project_id=project_id,
            state=args["state"], label=args.get("label"), page=s.page_request(args),
        )  # fmt: skip
        return s.paged(page)


@blp.route("/projects/<uuid:project_id>/issues/<uuid:issue_id>/start")
class ProjectIssueStart(MethodView):
    @requires("project:write")
    @blp.response(201, s.CCTaskListSchema)
    @answers(409, "The issue is already started, or an agent is busy (AGENT_BUSY).")
    def post(self, project_id: uuid.UUID, issue_id: uuid.UUID):
        """Start on the issue: its tasks, the first assigned to the Architect."""
        views = project_work.start_issue(
            sessions(), principal=current_principal(), project_id=project_id, issue_id=issue_id
        )
        items = [present_task(v) for v in views]
        return {"items": items, "total": len(items), "page": 1, "pages": 1 if items else 0}


@blp.route("/projects/<uuid:project_id>/issues/<uuid:issue_id>/tasks")
class ProjectIssueTasks(MethodView):
    @requires("job:read")
    @blp.arguments(s.PageArgsSchema, location="query")
    @blp.response(200, s.CCTaskListSchema)
    def get(self, args: dict[str, Any], project_id: uuid.UUID, issue_id: uuid.UUID):
        """The tasks made from the issue."""
        page = project_work.issue_tasks(
            sessions(), principal=current_principal(), project_id=project_id,
            issue_id=issue_id, page=s.page_request(args),
        )  # fmt: skip
        return s.paged(page, present_task)


# -- tasks ----------------------------------------------------------------------------------


@blp.route("/projects/<uuid:project_id>/tasks")
class ProjectTasks(MethodView):
    @requires("job:read")
    @blp.arguments(s.CCTaskListArgsSchema, location="query")
    @blp.response(200, s.CCTaskListSchema)
    def get(self, args: dict[str, Any], project_id: uuid.UUID):
        """The project's tasks (``status``, ``assigned_to``, ``issue_id``)."""
        page = project_work.list_tasks(
            sessions(), principal=current_principal(), project_id=project_id,
            status=args.get("status"), assigned_to=args.get("assigned_to"),
            issue_id=args.get("issue_id"), page=s.page_request(args),
        )  # fmt: skip
        return s.paged(page, present_task)

    @requires("project:write")
    @blp.arguments(ProjectTaskCreateSchema)
    @blp.response(201, s.ProjectTaskSchema)
    @answers(409, "The agent is already working on a task (AGENT_BUSY).")
    def post(self, data: dict[str, Any], project_id: uuid.UUID):
        """Create a task; with ``assigned_to_agent_id`` the agent starts on it."""
        return present_task(
            project_work.create_task(
                sessions(), principal=current_principal(), project_id=project_id, data=data
            )
        )


@blp.route("/projects/<uuid:project_id>/tasks/<uuid:task_id>")
class ProjectTaskById(MethodView):
    @requires("job:read")
    @blp.response(200, s.ProjectTaskSchema)
    def get(self, project_id: uuid.UUID, task_id: uuid.UUID):
        """The task with its agent, issue, pull request and progress."""
        return present_task(
            project_work.get_task(
                sessions(), principal=current_principal(), project_id=project_id, task_id=task_id
            )
        )


@blp.route("/projects/<uuid:project_id>/tasks/<uuid:task_id>/assign")
class ProjectTaskAssign(MethodView):
    @requires("project:write")
    @blp.arguments(s.CCTaskAssignSchema)
    @blp.response(200, s.ProjectTaskSchema)
    @answers(409, "The agent is already working on a task (AGENT_BUSY).")
    def post(self, data: dict[str, Any], project_id: uuid.UUID, task_id: uuid.UUID):
        """Give the task to an agent (``agent_id``), who starts on it."""
        return present_task(
            project_work.assign_task(
                sessions(),
                principal=current_principal(),
                project_id=project_id,
                task_id=task_id,
                agent_id=data.get("agent_id") or data["assigned_to_agent_id"],
            )  # fmt: skip
        )


@blp.route("/projects/<uuid:project_id>/tasks/<uuid:task_id>/complete")
class ProjectTaskComplete(MethodView):
    @requires("project:write")
    @blp.response(200, s.ProjectTaskSchema)
    @answers(409, "The task's agent is still working on it.")
    def post(self, project_id: uuid.UUID, task_id: uuid.UUID):
        """Mark the task complete."""
        return present_task(
            project_work.complete_task(
                sessions(), principal=current_principal(), project_id=project_id, task_id=task_id
            )
        )


# -- pull requests --------------------------------------------------------------------------


@blp.route("/projects/<uuid:project_id>/pull-requests")
class PullRequests(MethodView):
    @requires("job:read")
    @blp.arguments(s.CCPullRequestListArgsSchema, location="query")
    @blp.response(200, s.CCPullRequestListSchema)
    def get(self, args: dict[str, Any], project_id: uuid.UUID):
        """The project's pull requests, newest first."""
        page = project_work.list_pull_requests(
            sessions(), principal=current_principal(), project_id=project_id,
            status=args.get("status"), page=s.page_request(args),
        )  # fmt: skip
        return s.paged(page)


@blp.route("/projects/<uuid:project_id>/pull-requests/<uuid:pull_request_id>/approve")
class PullRequestApprove(MethodView):
    @requires("project:write")
    @blp.response(200, s.PullRequestSchema)
    @answers(502, "GitHub refused or could not be reached (GITHUB_API_ERROR).")
    def post(self, project_id: uuid.UUID, pull_request_id: uuid.UUID):
        """Approve on GitHub, then merge if its checks pass."""
        return project_work.approve_pull_request(
            sessions(), principal=current_principal(), project_id=project_id,
            pull_request_id=pull_request_id,
        )  # fmt: skip


@blp.route("/projects/<uuid:project_id>/pull-requests/<uuid:pull_request_id>/reject")
class PullRequestReject(MethodView):
    @requires("project:write")
    @blp.arguments(s.CCRejectSchema)
    @blp.response(200, s.PullRequestSchema)
    @answers(502, "GitHub refused or could not be reached (GITHUB_API_ERROR).")
    def post(self, data: dict[str, Any], project_id: uuid.UUID, pull_request_id: uuid.UUID):
        """Request changes on GitHub with ``feedback``."""
        return project_work.reject_pull_request(
            sessions(), principal=current_principal(), project_id=project_id,
            pull_request_id=pull_request_id, feedback=data["feedback"],
        )  # fmt: skip


# -- budget and analytics -------------------------------------------------------------------


@blp.route("/budget/summary")
class BudgetSummary(MethodView):
    @requires()
    @blp.response(200, s.CCBudgetSummarySchema)
    def get(self):
        """Today, this week and this month (UTC) against the global limits; alerts."""
        return reports.budget_summary(sessions(), principal=current_principal())


@blp.route("/budget/by-project")
class BudgetByProject(MethodView):
    @requires()
    @blp.arguments(s.CCSpendArgsSchema, location="query")
    @blp.response(200, s.CCProjectSpendReportSchema)
    def get(self, args: dict[str, Any]):
        """Spending per project (default: this month to date), a page of rows."""
        report = reports.spend_by(
            sessions(), principal=current_principal(), dimension="project",
            start=args.get("start_date"), end=args.get("end_date"),
        )  # fmt: skip
        return s.SpendPage(report, s.page_request(args))


@blp.route("/budget/by-agent")
class BudgetByAgent(MethodView):
    @requires()
    @blp.arguments(s.CCSpendArgsSchema, location="query")
    @blp.response(200, s.CCAgentSpendReportSchema)
    def get(self, args: dict[str, Any]):
        """Spending per agent (default: this month to date), a page of rows."""
        report = reports.spend_by(
            sessions(), principal=current_principal(), dimension="agent",
            start=args.get("start_date"), end=args.get("end_date"),
        )  # fmt: skip
        return s.SpendPage(report, s.page_request(args))


@blp.route("/budget/timeline")
class BudgetTimeline(MethodView):
    @requires()
    @blp.arguments(s.CCTimelineArgsSchema, location="query")
    @blp.response(200, s.CCTimelineSchema)
    def get(self, args: dict[str, Any]):
        """Spending per day, week or month (default: the last 30 days by day)."""
        return reports.timeline(
            sessions(), principal=current_principal(), start=args.get("start_date"),
            end=args.get("end_date"), granularity=args["granularity"],
        )  # fmt: skip


@blp.route("/analytics/agents")
class AgentAnalytics(MethodView):
    @requires()
    @blp.arguments(s.CCDateRangeArgsSchema, location="query")
    @blp.response(200, s.CCAgentAnalyticsSchema)
    def get(self, args: dict[str, Any]):
        """Per agent: messages, cost, cost per message, tasks completed, success rate."""
        return reports.agent_analytics(
            sessions(), principal=current_principal(),
            start=args.get("start_date"), end=args.get("end_date"),
        )  # fmt: skip


@blp.route("/budget/limits")
class Limits(MethodView):
    @requires()
    @blp.arguments(s.CCLimitListArgsSchema, location="query")
    @blp.response(200, s.CCLimitListSchema)
    def get(self, args: dict[str, Any]):
        """Every budget limit, with its current window."""
        page = budget_limits.list_limits(
            sessions(), principal=current_principal(),
            filters=budget_limits.LimitFilters(), page=s.page_request(args),
        )  # fmt: skip
        return s.paged(page)

    @requires("budget:write")
    @blp.arguments(LimitCreateSchema)
    @blp.response(201, s.CCLimitSchema)
    def post(self, data: dict[str, Any]):
        """Create a limit."""
        return budget_limits.create_limit(sessions(), principal=current_principal(), data=data)


@blp.route("/budget/limits/<uuid:limit_id>")
class LimitById(MethodView):
    @requires("budget:write")
    @blp.arguments(LimitUpdateSchema)
    @blp.response(200, s.CCLimitSchema)
    def patch(self, changes: dict[str, Any], limit_id: uuid.UUID):
        """Update a limit (scope and period cannot change)."""
        return budget_limits.update_limit(
            sessions(), principal=current_principal(), limit_id=limit_id, changes=changes
        )

    @requires("budget:write")
    @blp.response(204)
    def delete(self, limit_id: uuid.UUID):
        """Delete a limit."""
        budget_limits.delete_limit(sessions(), principal=current_principal(), limit_id=limit_id)


# -- notifications --------------------------------------------------------------------------


@blp.route("/notifications")
class Notifications(MethodView):
    @requires()
    @blp.arguments(s.CCNotificationListArgsSchema, location="query")
    @blp.response(200, s.CCNotificationListSchema)
    def get(self, args: dict[str, Any]):
        """Newest first (``is_read``, ``severity``, ``limit``)."""
        filters = notifications.NotificationFilters(
            is_read=args.get("is_read"), severity=args.get("severity")
        )
        page = notifications.list_notifications(
            sessions(), principal=current_principal(), filters=filters, page=s.page_request(args)
        )
        return s.paged(page)


@blp.route("/notifications/<uuid:notification_id>/read")
class NotificationRead(MethodView):
    @requires()
    @blp.response(200, s.NotificationSchema)
    def post(self, notification_id: uuid.UUID):
        """Mark one notification read."""
        return notifications.mark_read(
            sessions(), principal=current_principal(), notification_id=notification_id
        )


@blp.route("/notifications/read-all")
class NotificationsReadAll(MethodView):
    @requires()
    @blp.response(200, s.CCReadAllSchema)
    def post(self):
        """Mark every unread notification read."""
        count = notifications.mark_all_read(sessions(), principal=current_principal())
        return {"message": f"Marked {count} notifications read", "marked_read": count}


# -- emergency ------------------------------------------------------------------------------


@blp.route("/emergency/pause-all")
class PauseAll(MethodView):
    @requires("emergency:write")
    @blp.response(200, s.CCPauseAllSchema)
    def post(self):
        """EMERGENCY: pause every agent's work in the organization."""
        paused = emergency.pause_everything(sessions(), principal=current_principal())
        return {
            "paused_agents": paused.agents,
            "active_conversations": paused.active_conversations,
            "message": "All agents paused. Manual resume required.",
        }


@blp.route("/emergency/resume-all")
class ResumeAll(MethodView):
    @requires("emergency:write")
    @blp.response(200, s.CCResumeAllSchema)
    def post(self):
        """Resume every agent paused by pause-all."""
        count = emergency.resume_all(sessions(), principal=current_principal())
        return {"resumed_agents": count, "message": "All agents resumed."}


# -- GitHub webhooks ------------------------------------------------------------------------


@blp.route("/webhooks/github")
class GitHubWebhook(MethodView):
    @blp.doc(security=[])
    @blp.response(200, s.CCGitHubReceiptSchema)
    @blp.alt_response(202, schema=s.CCGitHubReceiptSchema, description="ignored (unknown repo)")
    @answers(401, "The X-Hub-Signature-256 signature is missing or wrong.")
    def post(self):
        """GitHub's signed deliveries: issues, issue_comment, pull_request,
        pull_request_review, push."""
        receipt = github.receive(
            sessions(),
            body=request.get_data(cache=True),
            signature=request.headers.get("X-Hub-Signature-256"),
            event=request.headers.get("X-GitHub-Event"),
            delivery_id=request.headers.get("X-GitHub-Delivery"),
        )
        return receipt, 202 if receipt.status == "ignored" else 200
