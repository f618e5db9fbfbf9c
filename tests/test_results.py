"""What a finished job reports (orchestration/results.py): seed 004's security issue
items and a build's test figures, read from what the models wrote."""

from __future__ import annotations

from models import JobStep, StepStatus
from orchestration import plans
from orchestration.results import analysis_summary, reported_test_figures, security_issue

SECURITY_REPORT = """Security review of 'shop':
- SQL Injection | severity: high | line: 42 | recommendation: Use parameterized queries
- Hard-coded secret in settings.py | severity: Medium | line: 7
- Missing rate limiting on login
Score: 6.5/10
"""


def _step(kind: str, output: str) -> JobStep:
    return JobStep(
        name=f"analyze:{kind}",
        spec={"kind": "llm", "analysis_type": kind},
        status=StepStatus.COMPLETED.value,
        output=output,
    )


def test_security_issues_carry_severity_line_and_recommendation_as_seed_004():
    summary = analysis_summary([_step("security", SECURITY_REPORT)])
    assert summary["security_issues"] == [
        {"issue": "SQL Injection", "severity": "high", "line": 42,
         "recommendation": "Use parameterized queries"},
        {"issue": "Hard-coded secret in settings.py", "severity": "medium", "line": 7,
         "recommendation": None},
        {"issue": "Missing rate limiting on login", "severity": None, "line": None,
         "recommendation": None},
    ]  # fmt: skip
    assert summary["quality_score"] == 6.5


def test_a_finding_that_starts_with_its_fields_keeps_its_whole_text():
    item = security_issue("severity: low | line 3 | recommendation: escape output")
    assert item == {"issue": "severity: low | line 3 | recommendation: escape output",
                    "severity": "low", "line": 3, "recommendation": "escape output"}  # fmt: skip


def test_the_security_prompt_asks_for_the_format_the_reader_parses():
    plan = plans.analysis_plan({"project_name": "shop", "analysis_types": ["security", "types"]})
    security, types = plan[0].steps
    assert "severity:" in security.spec["instruction"] and "line:" in security.spec["instruction"]
    assert "severity:" not in types.spec["instruction"]


def test_build_test_figures_from_the_test_phase_report():
    report = "Wrote 12 tests.\nTests passed: 12\nCoverage: 87.5%\n"
    assert reported_test_figures(report) == {"tests_passed": 12, "test_coverage": 87.5}
    assert reported_test_figures("no figures here") == {"tests_passed": None,
                                                        "test_coverage": None}  # fmt: skip
    assert reported_test_figures(None) == {"tests_passed": None, "test_coverage": None}
    test_phase = next(p for p in plans.build_plan({"goal": "auth service"}) if p.name == "test")
    assert "Tests passed: N" in test_phase.steps[0].spec["instruction"]
