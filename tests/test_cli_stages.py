"""`gonogo check --stage`: exit codes per stage, the --json ladder, and graded scores in CI."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from bot.cli import main

PASS = '["python3", "-c", "print(\'ok\')"]'
FAIL = '["python3", "-c", "raise SystemExit(1)"]'

STAGED = f"""
id: staged
name: Staged gate
channel: C1
stages:
  - {{id: dark, name: Dark launch}}
  - {{id: canary, name: "Canary 5%"}}
  - {{id: full, name: Full production}}
checks:
  - {{id: unit, kind: command, run: {PASS}, severity: blocker}}
  - {{id: soak, kind: command, run: {FAIL}, before: full}}
  - {{id: audit, kind: manual, owner: sec, before: full, due: 2020-01-01}}
signoffs:
  - {{role: sec, label: Security, users: [U1]}}
risks:
  - {{id: load, description: unknown load, acceptor: sec, before: canary}}
"""


@pytest.fixture
def staged(tmp_path: Path) -> Path:
    path = tmp_path / "staged.yml"
    path.write_text(STAGED)
    return path


@pytest.mark.parametrize(
    ("flags", "code"),
    [
        (["--stage", "dark"], 0),  # everything before the dark launch holds
        (["--stage", "canary"], 3),  # the canary's risk is declared, its acceptance not evaluated in CI
        (["--stage", "full"], 1),  # soak fails, the audit is not done
        ([], 0),  # no --stage: the next stage to promote to, the first one
    ],
)
def test_check_stage_exit_codes(staged: Path, flags: list[str], code: int) -> None:
    assert main(["check", str(staged), "--ignore-signoffs", *flags]) == code


def test_check_stage_errors_exit_2(staged: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(staged), "--stage", "prod"]) == 2
    assert "--stage: unknown stage 'prod' in staged.yml (stages: dark, canary, full)" in capsys.readouterr().err
    plain = tmp_path / "plain.yml"
    plain.write_text(f"id: plain\nname: P\nchannel: C1\nchecks: [{{id: a, kind: command, run: {PASS}}}]\n")
    assert main(["check", str(plain), "--stage", "dark"]) == 2
    assert "plain.yml has no stages" in capsys.readouterr().err


def test_json_lists_every_stage_with_its_open_conditions(staged: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(staged), "--ignore-signoffs", "--json", "--stage", "canary"]) == 3
    document = json.loads(capsys.readouterr().out)
    assert document["stage"] == "canary" and document["verdict"] == "GO WITH RISK" and document["exit_code"] == 3
    assert [(s["id"], s["name"], s["verdict"], s["exit_code"]) for s in document["stages"]] == [
        ("dark", "Dark launch", "GO", 0),
        ("canary", "Canary 5%", "GO WITH RISK", 3),
        ("full", "Full production", "NO-GO", 1),
    ]
    full = document["stages"][2]["open"]
    assert [(c["subject"], c["stage"], c["owner"]) for c in full] == [
        ("soak", "full", None),
        ("audit", "full", "Security"),
    ]
    audit = full[1]
    assert audit["due"] == "2020-01-01" and audit["overdue"] is True
    assert [c["subject"] for c in document["overdue"]] == ["audit"]


def test_plain_output_shows_the_ladder(staged: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["check", str(staged), "--ignore-signoffs", "--stage", "full"])
    out = " ".join(capsys.readouterr().out.split())  # the console wraps at its width
    assert "Dark launch: GO Canary 5%: GO WITH RISK > Full production: NO-GO 2 open" in out
    assert "- audit is pending: waiting for sec to mark it done with evidence [Security] due 2020-01-01 OVERDUE" in out


def test_a_gate_without_stages_keeps_its_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plain = tmp_path / "plain.yml"
    plain.write_text(f"id: plain\nname: P\nchannel: C1\nchecks: [{{id: a, kind: command, run: {PASS}}}]\n")
    assert main(["check", str(plain), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["verdict"] == "GO" and document["stage"] is None and document["stages"] == []


PREFLIGHT = """
id: preflight
name: Preflight
channel: C1
policy:
  kind: risk_score
  weights: {readiness: 0.5, mvp: 0.5}
  penalty: 5
  go_below: 50
  caution_below: 65
checks:
  - id: readiness
    kind: command
    run: ["python3", "-c", "print('readiness=7.0')"]
    score: {regex: "readiness=([0-9.]+)", max: 10}
  - id: mvp
    kind: command
    run: ["python3", "-c", "print('mvp=7.0')"]
    score: {regex: "mvp=([0-9.]+)", max: 10}
"""


def test_two_scored_commands_give_risk_35_and_go(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The preflight report: readiness 7.0/10, MVP 7.0/10, weights 0.5/0.5, penalty 5 -> 35 -> GO."""
    path = tmp_path / "preflight.yml"
    path.write_text(textwrap.dedent(PREFLIGHT))
    assert main(["check", str(path), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["verdict"] == "GO"
    score = document["score"]
    assert score["score"] == 35 and score["weighted_pass_pct"] == 70
    assert [(t["key"], t["weight"], t["value"]) for t in score["terms"]] == [("readiness", 0.5, 0.7), ("mvp", 0.5, 0.7)]
    assert score["terms"][0]["checks"] == [{"check": "readiness", "score": 0.7, "weight": 0.5, "graded": True}]
    assert {c["id"]: c["score"] for c in document["checks"]} == {"readiness": 0.7, "mvp": 0.7}
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "risk score 35 = 100 - 70% + penalty 5" in out and "readiness: 0.70 x 0.5 (readiness 0.70)" in out
