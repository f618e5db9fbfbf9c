"""Built-in tools, run in the worker: one call bounded in time; its failure is a result
the model is told about, never a crashed step."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from orchestration.tools import CALCULATOR, SEARCH
from workers.tools.base import ToolContext, ToolError
from workers.tools.calculator import calculator
from workers.tools.search import search

__all__ = ["TOOLS", "ToolContext", "ToolError", "ToolOutcome", "run_tool"]

log = logging.getLogger(__name__)

Tool = Callable[[dict[str, Any], ToolContext], str]
TOOLS: dict[str, Tool] = {CALCULATOR: calculator, SEARCH: search}


@dataclass(frozen=True)
class ToolOutcome:
    ok: bool
    content: str  # the result, or the error the model is told
    elapsed_ms: int


def run_tool(
    name: str,
    arguments_json: str,
    context: ToolContext,
    *,
    allowed: set[str] | frozenset[str],
    max_chars: int,
) -> ToolOutcome:
    started = time.monotonic()

    def outcome(ok: bool, content: str) -> ToolOutcome:
        return ToolOutcome(ok, content[:max_chars], int((time.monotonic() - started) * 1000))

    tool = TOOLS.get(name)
    if tool is None or name not in allowed:
        return outcome(False, f"error: no tool named '{name}' is available")
    try:
        arguments = json.loads(arguments_json or "{}")
    except ValueError:
        return outcome(False, "error: the arguments are not valid JSON")
    if not isinstance(arguments, dict):
        return outcome(False, "error: the arguments must be a JSON object")
    # A thread so the call can be abandoned at its time bound; the tools themselves are
    # bounded too (size limits, statement_timeout), so an abandoned thread ends soon.
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"tool-{name}")
    future = pool.submit(tool, arguments, context)
    try:
        return outcome(True, future.result(timeout=context.timeout_seconds))
    except FutureTimeout:
        return outcome(
            False, f"error: the tool did not finish within {context.timeout_seconds:g} s"
        )
    except ToolError as exc:
        return outcome(False, f"error: {exc}")
    except Exception as exc:  # a tool bug is the model's information too, and logged
        log.exception("tool %s raised", name)
        return outcome(False, f"error: the tool failed ({type(exc).__name__})")
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
