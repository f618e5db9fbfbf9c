"""``search``: the organization's own earlier job outputs, ranked (orchestration.search)."""

from __future__ import annotations

import json
from typing import Any

from models.db import transaction
from orchestration.search import search_outputs
from workers.tools.base import ToolContext, ToolError

MAX_QUERY_CHARS = 500


def search(arguments: dict[str, Any], context: ToolContext) -> str:
    query = arguments.get("query")
    if not isinstance(query, str) or not query.strip():
        raise ToolError("'query' must be a non-empty string")
    if len(query) > MAX_QUERY_CHARS:
        raise ToolError(f"'query' is longer than {MAX_QUERY_CHARS} characters")
    limit = arguments.get("limit", 5)
    if not isinstance(limit, int) or not 1 <= limit <= 10:
        raise ToolError("'limit' must be an integer from 1 to 10")
    with transaction(context.sessions) as session:
        hits = search_outputs(
            session,
            organization_id=context.organization_id,
            query=query,
            limit=limit,
            exclude_job_id=context.job_id,
            timeout_ms=int(context.timeout_seconds * 1000),
        )
    return json.dumps(
        {
            "query": query,
            "results": [
                {
                    "source": h.source,
                    "job_id": str(h.job_id) if h.job_id else None,
                    "conversation_id": str(h.conversation_id) if h.conversation_id else None,
                    "job_title": h.job_title,
                    "step": h.step,
                    "rank": h.rank,
                    "snippet": h.snippet,
                }
                for h in hits
            ],
        }
    )
