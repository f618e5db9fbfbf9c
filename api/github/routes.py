"""POST /webhooks/github: GitHub's signed deliveries (seed 001). No bearer token: the
X-Hub-Signature-256 HMAC over the raw body is the authentication, checked before parsing."""

from __future__ import annotations

from flask import request
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields

from api.security import sessions
from orchestration import github

blp = Blueprint(
    "github",
    __name__,
    url_prefix="/api/v1/webhooks/github",
    description="GitHub webhooks in (signed with GITHUB_WEBHOOK_SECRET)",
)


class GitHubReceiptSchema(Schema):
    status = fields.String(metadata={"enum": ["processed", "duplicate", "ignored"]})
    event = fields.String()
    delivery_id = fields.String()
    projects = fields.Integer()
    reason = fields.String(allow_none=True)


@blp.route("")
class GitHubWebhook(MethodView):
    @blp.doc(security=[])
    @blp.response(200, GitHubReceiptSchema)
    @blp.alt_response(202, schema=GitHubReceiptSchema, description="ignored (unknown repo)")
    def post(self):
        """Handles ``issues``, ``issue_comment``, ``pull_request``,
        ``pull_request_review`` and ``push`` for the project whose ``github_repo`` matches.
        401 for a bad signature (nothing written), 400 for a malformed payload, 200
        ``duplicate`` for a replayed ``X-GitHub-Delivery``, 202 ``ignored`` otherwise."""
        receipt = github.receive(
            sessions(),
            body=request.get_data(cache=True),
            signature=request.headers.get("X-Hub-Signature-256"),
            event=request.headers.get("X-GitHub-Event"),
            delivery_id=request.headers.get("X-GitHub-Delivery"),
        )
        return receipt, 202 if receipt.status == "ignored" else 200
