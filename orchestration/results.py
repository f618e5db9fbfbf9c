"""What a finished job reports as its result, per kind (pure functions over rows)."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

from models import Job, JobKind, JobPhase, JobStep, StepStatus

SCORE_RE = re.compile(r"Score:\s*([0-9]+(?:\.[0-9]+)?)\s*/\s*10", re.IGNORECASE)
BULLET_RE = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+(.*\S)\s*$", re.MULTILINE)
# A security finding as the analysis prompt asks for it (plans.SECURITY_FINDING_FORMAT):
# "<issue> | severity: high | line: 42 | recommendation: <fix>"; any part may be missing.
SEVERITY_RE = re.compile(r"\bseverity\s*[:=]\s*(critical|high|medium|low|info)\b", re.I)
LINE_RE = re.compile(r"\blines?\s*[:=#]?\s*(\d{1,7})\b", re.I)
RECOMMENDATION_RE = re.compile(r"\b(?:recommendation|fix)\s*[:=]\s*(.+?)\s*(?:\||$)", re.I)
TESTS_PASSED_RE = re.compile(r"\btests?\s+passed\s*[:=]\s*(\d{1,7})\b", re.I)
COVERAGE_RE = re.compile(r"\b(?:test\s+)?coverage\s*[:=]\s*([0-9]+(?:\.[0-9]+)?)\s*%", re.I)


def security_issue(finding: str) -> dict[str, Any]:
    """One security finding as seed 004's item: ``issue``, ``severity``, ``line``,
    ``recommendation`` (null where the analysis did not say)."""
    severity = SEVERITY_RE.search(finding)
    line = LINE_RE.search(finding)
    recommendation = RECOMMENDATION_RE.search(finding)
    issue = re.split(r"\s+\|\s+|\s+[—–]\s+", finding, maxsplit=1)[0].strip()
    if SEVERITY_RE.match(issue) or LINE_RE.match(issue):
        issue = finding
    return {
        "issue": issue,
        "severity": severity.group(1).lower() if severity else None,
        "line": int(line.group(1)) if line else None,
        "recommendation": recommendation.group(1) if recommendation else None,
    }


def reported_test_figures(text: str | None) -> dict[str, Any]:
    """``tests_passed`` and ``test_coverage`` from the test phase's report (the build
    plan asks for ``Tests passed: N`` and ``Coverage: N%`` lines), null when absent."""
    passed = TESTS_PASSED_RE.search(text or "")
    coverage = COVERAGE_RE.search(text or "")
    return {
        "tests_passed": int(passed.group(1)) if passed else None,
        "test_coverage": min(float(coverage.group(1)), 100.0) if coverage else None,
    }


def _usage(steps: list[JobStep]) -> dict[str, Any]:
    prompt = sum(s.prompt_tokens for s in steps)
    completion = sum(s.completion_tokens for s in steps)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _cost(steps: list[JobStep]) -> str:
    return str(sum((s.cost for s in steps), Decimal(0)))


def analysis_summary(steps: list[JobStep]) -> dict[str, Any]:
    """Join the per-type analyses into one score (the 'score' phase of an analysis job)."""
    scores: dict[str, float] = {}
    findings: dict[str, list[str]] = {}
    for step in steps:
        kind = step.spec.get("analysis_type")
        if not kind or step.status != StepStatus.COMPLETED.value:
            continue
        text = step.output or ""
        if match := SCORE_RE.search(text):
            scores[kind] = min(float(match.group(1)), 10.0)
        findings[kind] = BULLET_RE.findall(text)[:20]
    quality = round(sum(scores.values()) / len(scores), 1) if scores else None
    return {
        "quality_score": quality,
        "scores": scores,
        "findings": findings,
        "security_issues": [security_issue(f) for f in findings.get("security", [])],
        "code_smells": len(findings["quality"]) if "quality" in findings else None,
        "type_errors": len(findings["types"]) if "types" in findings else None,
        "coverage_percent": None,
        "recommendations": [f for items in findings.values() for f in items][:10],
    }


def build_result(job: Job, phases: list[JobPhase], steps: list[JobStep]) -> dict[str, Any]:
    phases = sorted(phases, key=lambda p: p.position)
    llm_steps = [s for s in steps if s.spec.get("kind") == "llm"]
    last_llm = max(
        llm_steps, key=lambda s: (s.completed_at is not None, s.completed_at or 0), default=None
    )
    common = {
        "token_usage": _usage(steps),
        "cost": _cost(steps),
        "execution_time_ms": sum(p.execution_time_ms or 0 for p in phases),
    }
    kind = JobKind(job.kind)
    if kind == JobKind.ANALYSIS:
        score = next((s for s in steps if s.spec.get("kind") == "score"), None)
        summary = json.loads(score.output) if score and score.output else {}
        return {**summary, **common}
    if kind == JobKind.BUILD:
        by_name = {p.name.lower(): p for p in phases}
        generate = [s for s in steps if s.spec.get("component")]
        return {
            "plan": by_name["plan"].output if "plan" in by_name else None,
            "components": [
                {"component": s.spec["component"], "output": s.output, "model": s.model}
                for s in sorted(generate, key=lambda s: s.position)
            ],
            "tests": by_name["test"].output if "test" in by_name else None,
            **reported_test_figures(by_name["test"].output if "test" in by_name else None),
            "review": by_name["review"].output if "review" in by_name else None,
            **common,
        }
    if kind == JobKind.ORCHESTRATION:
        completed = [p for p in phases if p.status == StepStatus.COMPLETED.value]
        return {
            "summary": phases[-1].output if phases else None,
            "total_phases": len(phases),
            "completed_phases": len(completed),
            "success_rate": round(100.0 * len(completed) / len(phases), 1) if phases else 0.0,
            **common,
        }
    return {
        "output": last_llm.output if last_llm else None,
        "provider_used": last_llm.provider if last_llm else None,
        "model": last_llm.model if last_llm else None,
        "tools_used": list(last_llm.tools_used or []) if last_llm else [],
        **common,
    }
