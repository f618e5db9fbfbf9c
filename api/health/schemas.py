"""Health, readiness, liveness and status bodies (seeds 000 and 004)."""

from __future__ import annotations

from marshmallow import Schema, fields


class DependenciesSchema(Schema):
    database = fields.String()
    broker = fields.String()
    redis = fields.String()


class WorkersSchema(Schema):
    status = fields.String()  # available | unavailable | unknown
    count = fields.Integer(allow_none=True)


class ProviderHealthSchema(Schema):
    status = fields.String()  # available | degraded | unavailable | not_configured | unknown
    breaker = fields.String(allow_none=True)  # closed | open | half_open
    detail = fields.String(allow_none=True)


class HealthSchema(Schema):
    status = fields.String()
    timestamp = fields.DateTime()
    uptime = fields.String()
    uptime_seconds = fields.Integer()
    version = fields.String()
    dependencies = fields.Nested(DependenciesSchema)
    workers = fields.Nested(WorkersSchema)
    providers = fields.Dict(keys=fields.String(), values=fields.Nested(ProviderHealthSchema))


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
    workers = fields.Nested(WorkersSchema)
    providers = fields.Dict(keys=fields.String(), values=fields.Nested(ProviderHealthSchema))
    metrics = fields.Dict()
