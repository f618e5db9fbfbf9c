"""The shared contract runner for seed dialects (issue 15).

``tests/compat/<dialect>_examples.json`` holds the document's own examples, one per
documented request: what is sent (method, path below the dialect's base, headers, query,
body) and the documented answer (status and body, transcribed from the document). The
runner sends each in order and compares the answer field by field with the documented one:

- every documented field must be present; extra fields are allowed;
- values are compared exactly, except values that vary by nature, compared by type:
  ids (a UUID, ``"uuid"`` or a truncated ``"550e8400..."``), times (ISO 8601), tokens
  (``"eyJ..."``), and the dotted paths an example lists in ``vary``;
- ``expect`` gives the exact value where the document's example shows another state than
  the test's (``{"status": "initializing"}`` for a build just created);
- a documented list of objects: its first item is the shape of every item answered;
  a list of values is compared item by item;
- ``save`` keeps answered values for later examples (``{"task_id": "task_id"}``), used as
  ``{task_id}`` in paths, headers, query and bodies (with ``{username}``, ``{password}``);
- ``poll``: ``{"field": "status", "until": ["completed"]}`` repeats the request (a second
  apart, 90 s at most) until the answer reaches that state, for documented final states;
- ``nullable``: dotted paths that may also be null (a stream line before any progress);
- ``"stream": "sse"``: the answer is ``text/event-stream`` and every ``data:`` line
  matches the documented ``response`` (the first documented line's shape).

``tests/compat/test_contract_coverage.py`` fails when a dialect route has no example.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)
ISO_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})?$")
PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*)\}")


def load_examples(dialect: str) -> list[dict[str, Any]]:
    return json.loads((HERE / f"{dialect}_examples.json").read_text())["examples"]


def example_files() -> list[Path]:
    return sorted(HERE.glob("*_examples.json"))


def fill(value: Any, context: dict[str, Any]) -> Any:
    """Put saved values into ``{name}`` placeholders (a whole-string one keeps its type)."""
    if isinstance(value, str):
        whole = PLACEHOLDER.fullmatch(value)
        if whole and whole.group(1) in context:
            return context[whole.group(1)]
        return PLACEHOLDER.sub(
            lambda m: str(context[m.group(1)]) if m.group(1) in context else m.group(0), value
        )
    if isinstance(value, dict):
        return {fill(k, context): fill(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, context) for v in value]
    return value


def varies(value: Any) -> bool:
    """A documented value that stands for "some id/time/token" rather than itself."""
    if not isinstance(value, str):
        return False
    return bool(
        UUID.match(value)
        or ISO_TIME.match(value)
        or value in ("uuid", "eyJ...")
        or value.startswith("eyJ")
        or re.fullmatch(r"[0-9a-f]{6,}\.\.\.", value)
    )


def _same_type(documented: Any, actual: Any) -> bool:
    if isinstance(documented, bool) or isinstance(actual, bool):
        return isinstance(documented, bool) and isinstance(actual, bool)
    if isinstance(documented, int | float):
        return isinstance(actual, int | float)
    if documented is None:
        return True
    return isinstance(actual, type(documented))


def _by_type(documented: Any, actual: Any, where: str) -> list[str]:
    """A varying value: the same JSON type, and an id or a time where the document shows one."""
    if not _same_type(documented, actual):
        return [f"{where}: expected a {type(documented).__name__}, got {actual!r}"]
    if not isinstance(documented, str):
        return []
    if ISO_TIME.match(documented) and not ISO_TIME.match(actual):
        return [f"{where}: {actual!r} is not an ISO 8601 time"]
    looks_like_id = UUID.match(documented) or documented == "uuid" or documented.endswith("...")
    if looks_like_id and not documented.startswith("eyJ") and not UUID.match(actual):
        return [f"{where}: {actual!r} is not a UUID"]
    return []


def compare(
    documented: Any,
    actual: Any,
    *,
    path: str = "",
    vary: set[str] = frozenset(),  # type: ignore[assignment]
    expect: dict[str, Any] | None = None,
    nullable: set[str] = frozenset(),  # type: ignore[assignment]
) -> list[str]:
    """Differences between a documented value and the answered one (empty: it conforms)."""
    expect = expect or {}
    where = path or "<body>"
    if actual is None and path in nullable:
        return []
    if path in expect:
        wanted = expect[path]
        return [] if actual == wanted else [f"{where}: expected {wanted!r}, got {actual!r}"]
    if path in vary or varies(documented):
        return _by_type(documented, actual, where)
    if isinstance(documented, dict):
        if not isinstance(actual, dict):
            return [f"{where}: expected an object, got {actual!r}"]
        problems = []
        for key, value in documented.items():
            child = f"{path}.{key}" if path else key
            if key not in actual:
                problems.append(f"{child}: missing")
                continue
            problems += compare(
                value, actual[key], path=child, vary=vary, expect=expect, nullable=nullable
            )
        return problems
    if isinstance(documented, list):
        if not isinstance(actual, list):
            return [f"{where}: expected a list, got {actual!r}"]
        if not documented:
            return [] if not actual else [f"{where}: expected [], got {actual!r}"]
        if not actual:
            return [f"{where}: expected items like {documented[0]!r}, got []"]
        if not all(isinstance(item, dict) for item in documented):
            # A list of values (["openai", "groq"]) is a value: item by item.
            if len(actual) != len(documented):
                return [f"{where}: expected {documented!r}, got {actual!r}"]
            return [
                problem
                for index, (doc_item, item) in enumerate(zip(documented, actual, strict=True))
                for problem in compare(
                    doc_item,
                    item,
                    path=f"{path}.{index}",
                    vary=vary,
                    expect=expect,
                    nullable=nullable,
                )  # fmt: skip
            ]
        problems = []
        for index, item in enumerate(actual):
            problems += compare(
                documented[0], item, path=f"{path}.{index}", vary=_items(vary, path, index),
                expect=_items_expect(expect, path, index),
                nullable=_items(nullable, path, index),
            )  # fmt: skip
        return problems
    if documented != actual or not _same_type(documented, actual):
        return [f"{where}: expected {documented!r}, got {actual!r}"]
    return []


def _items(vary: set[str], path: str, index: int) -> set[str]:
    """``vary`` names list items with ``[]`` (``data[].created_at``): for item ``index``."""
    prefix = f"{path}[]"
    return set(vary) | {
        v.replace(prefix, f"{path}.{index}", 1) for v in vary if v.startswith(prefix)
    }


def _items_expect(expect: dict[str, Any], path: str, index: int) -> dict[str, Any]:
    prefix = f"{path}[]"
    out = dict(expect)
    for key, value in expect.items():
        if key.startswith(prefix):
            out[key.replace(prefix, f"{path}.{index}", 1)] = value
    return out


def dig(body: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        body = body[int(part)] if isinstance(body, list) else body[part]
    return body


def sse_data(text: str) -> list[Any]:
    return [json.loads(line[5:].strip()) for line in text.splitlines() if line.startswith("data:")]


def run_examples(
    client: Any, base: str, examples: list[dict[str, Any]], context: dict[str, Any]
) -> list[str]:
    """Send every example below ``base``; the list of every difference found."""
    failures: list[str] = []
    for example in examples:
        name = example["name"]
        path = base + fill(example["path"], context)
        headers = fill(example.get("headers", {}), context)
        kwargs: dict[str, Any] = {"headers": headers}
        if "query" in example:
            kwargs["query_string"] = fill(example["query"], context)
        if "body" in example:
            kwargs["json"] = fill(example["body"], context)
        response = client.open(path, method=example["method"], **kwargs)
        if "poll" in example:
            response = _poll(client, path, example, kwargs, response)
        if response.status_code != example["status"]:
            failures.append(
                f"{name}: {example['method']} {path} answered {response.status_code}, "
                f"documented {example['status']}: {response.get_data(as_text=True)[:300]}"
            )
            continue
        vary = set(example.get("vary", []))
        nullable = set(example.get("nullable", []))
        expect = fill(example.get("expect", {}), context)
        if example.get("stream") == "sse":
            if response.mimetype != "text/event-stream":
                failures.append(f"{name}: content type {response.mimetype}")
                continue
            lines = sse_data(response.get_data(as_text=True))
            if not lines:
                failures.append(f"{name}: no data lines")
            for line in lines:
                failures += [
                    f"{name}: {p}"
                    for p in compare(
                        example["response"], line, vary=vary, expect=expect, nullable=nullable
                    )
                ]
            continue
        documented = example.get("response")
        if documented is None:
            if response.get_data():
                failures.append(f"{name}: documented no body, got {response.get_data()[:200]!r}")
            continue
        body = response.get_json(silent=True)
        failures += [
            f"{name}: {problem}"
            for problem in compare(documented, body, vary=vary, expect=expect, nullable=nullable)
        ]
        for key, dotted in example.get("save", {}).items():
            try:
                context[key] = dig(body, dotted)
            except (KeyError, IndexError, TypeError):
                failures.append(f"{name}: nothing to save at {dotted}")
    return failures


def _poll(client: Any, path: str, example: dict[str, Any], kwargs: dict, response: Any) -> Any:
    poll = example["poll"]
    deadline = time.monotonic() + poll.get("timeout", 90)
    while time.monotonic() < deadline and response.status_code == example["status"]:
        body = response.get_json(silent=True) or {}
        try:
            if dig(body, poll["field"]) in poll["until"]:
                break
        except (KeyError, IndexError, TypeError):
            pass
        time.sleep(0.5)
        response = client.open(path, method=example["method"], **kwargs)
    return response


def covered_endpoints(app: Any, base: str, examples: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """(endpoint, method) pairs the examples reach below ``base``."""
    adapter = app.url_map.bind("localhost")
    covered = set()
    for example in examples:
        path = base + PLACEHOLDER.sub("00000000-0000-4000-8000-000000000000", example["path"])
        try:
            endpoint, _ = adapter.match(path, method=example["method"])
        except Exception:  # noqa: BLE001 - a miss (404/405/redirect) covers nothing
            continue
        covered.add((endpoint, example["method"]))
    return covered
