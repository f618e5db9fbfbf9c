"""Health, readiness, liveness and status bodies (seeds 000 and 004)."""

from __future__ import annotations

from marshmallow import Schema, fields


class DependenciesSchema(Schema):
    database = fields.String()
    broker = fields.String()
    redis = fields.String()


class HealthSchema(Schema):
    status = fields.String()
    timestamp = fields.DateTime()
    uptime = fields.String()
    uptime_seconds = fields.Integer()
    version = fields.String()
    dependencies = fields.Nested(DependenciesSchema)


class ProbeSchema(Schema):
    status = fields.String()
    timestamp = fields.DateTime()
    checks = fields.Dict()


class ComponentsSchema(Schema):
    api = fields.String()
    database = fields.String()
    broker = fields.String()
    cache = fields.String()


class StatusSchema(Schema):
    status = fields.String()
    timestamp = fields.DateTime()
    version = fields.String()
    components = fields.Nested(ComponentsSchema)
    metrics = fields.Dict()
