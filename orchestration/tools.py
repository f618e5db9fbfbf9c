"""The tools an agent may list (seed 002 ``tools``), as the model is offered them.

The names and the OpenAI function schemas are the contract between the API (which
refuses unknown names at agent creation) and the workers (``workers/tools/`` runs them).
"""

from __future__ import annotations

from typing import Any

CALCULATOR = "calculator"
SEARCH = "search"

TOOL_SPECS: dict[str, dict[str, Any]] = {
    CALCULATOR: {
        "type": "function",
        "function": {
            "name": CALCULATOR,
            "description": (
                "Evaluate an arithmetic expression exactly: numbers, + - * / // % **, "
                "parentheses. Returns the value as text."
            ),
            "parameters": {
                "type": "object",
                "properties": {
                    "expression": {"type": "string", "description": "e.g. (2500000 * 1.18) / 4"}
                },
                "required": ["expression"],
                "additionalProperties": False,
            },
        },
    },
    SEARCH: {
        "type": "function",
        "function": {
            "name": SEARCH,
            "description": (
                "Full-text search over the organization's own earlier job outputs. "
                "Returns the best matches, ranked, with a snippet of each."
            ),
            "parameters": {
                "type": "object",
                "properties": {
                    "query": {"type": "string", "description": "words or a quoted phrase"},
                    "limit": {"type": "integer", "minimum": 1, "maximum": 10},
                },
                "required": ["query"],
                "additionalProperties": False,
            },
        },
    },
}

TOOL_NAMES: tuple[str, ...] = tuple(TOOL_SPECS)


def specs_for(names: list[str]) -> list[dict[str, Any]]:
    """The OpenAI ``tools`` list for an agent's tool names (unknown names skipped: the API
    refuses them, and a tool removed later must not break old agents)."""
    return [TOOL_SPECS[name] for name in names if name in TOOL_SPECS]
