"""Emergency controls (seed 001): admins stop and restart all of the organization's jobs."""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields

from api.security import current_principal, requires, sessions
from orchestration import emergency

blp = Blueprint(
    "emergency", __name__, url_prefix="/api/v1/emergency", description="Emergency controls"
)


class PausedSchema(Schema):
    message = fields.String()
    paused_count = fields.Integer()


class ResumedSchema(Schema):
    message = fields.String()
    resumed_count = fields.Integer()


@blp.route("/pause-all")
class PauseAll(MethodView):
    @requires("emergency:write")
    @blp.response(200, PausedSchema)
    def post(self):
        """Pause every queued and running job before its next provider call."""
        count = emergency.pause_all(sessions(), principal=current_principal())
        return {"message": f"Paused {count} jobs", "paused_count": count}


@blp.route("/resume-all")
class ResumeAll(MethodView):
    @requires("emergency:write")
    @blp.response(200, ResumedSchema)
    def post(self):
        """Resume every job paused by pause-all, from where it stopped."""
        count = emergency.resume_all(sessions(), principal=current_principal())
        return {"message": f"Resumed {count} jobs", "resumed_count": count}
