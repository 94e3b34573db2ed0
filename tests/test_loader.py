"""Loading and validating gate files: the issue's contract example, and every error at once."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import yaml

from bot.cli import main
from bot.core.errors import ConfigError
from bot.core.gate import Gate, RiskScorePolicy, ThresholdPolicy
from bot.core.loader import load_gate, load_gates

CONTRACT = Path(__file__).parent / "data" / "contract.yml"


def write(tmp_path: Path, text: str, name: str = "payments.yml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_gates(path)
    return caught.value.problems


def test_the_issue_example_validates_as_written() -> None:
    loaded = load_gate(CONTRACT)
    gate = loaded.gate
    assert gate.id == "payments" and len(gate.checks) == 8
    assert [c.kind for c in gate.checks] == [
        "command",
        "command",
        "http",
        "prometheus",
        "github",
        "file",
        "tcp",
        "manual",
    ]
    assert gate.checks[0].timeout is not None and gate.checks[0].timeout.total_seconds() == 600
    assert gate.role("sre") is not None and gate.role("sre").usergroup == "S0SRE"  # type: ignore[union-attr]
    assert gate.reminders is not None and gate.reminders.every.total_seconds() == 7200
    assert len(loaded.sha256) == 64


def test_other_policies_validate() -> None:
    base = CONTRACT.read_text().replace("kind: strict", "kind: threshold\n  go: 1.0\n  review: 0.9\n  review_role: sre")
    assert isinstance(Gate.model_validate(yaml.safe_load(base)).policy, ThresholdPolicy)
    risk = CONTRACT.read_text().replace(
        "kind: strict", "kind: risk_score\n  weights: {unit-tests: 0.5, health: 0.5}\n  penalty: 5"
    )
    assert isinstance(Gate.model_validate(yaml.safe_load(risk)).policy, RiskScorePolicy)


GOOD_HEAD = """\
id: payments
name: Payments
channel: C1
"""


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "checks:\n  - id: p\n    kind: prometheus\n    url: http://x\n    query: up\n    expect: '=< 3'\n",
            "payments.yml:9: checks[0].expect: unknown operator '=<'",
        ),
        ("colour: blue\n", "payments.yml:4: colour: unknown key"),
        (
            "checks:\n  - id: a\n    kind: command\n    run: [x]\n    tmeout: 3s\n",
            "payments.yml:8: checks[0].tmeout: unknown key",
        ),
        ("checks:\n  - id: a\n    kind: command\n    run: 'ls | wc'\n", "checks[0]: run is a string"),
        ("checks:\n  - id: a\n    kind: smoke\n", "checks[0]: Input tag 'smoke'"),
        ("checks:\n  - id: a\n    kind: command\n    run: [x]\n    timeout: 10 minutes\n", "invalid duration"),
        ("checks:\n  - id: a\n    kind: http\n    url: ftp://x\n", "checks[0].url"),
        (
            "checks:\n  - id: a\n    kind: http\n    url: http://x\n    expect:\n      headers: {X: 're:('}\n",
            "invalid regex",
        ),
        ("checks:\n  - id: a\n    kind: tcp\n    host: h\n    port: 70000\n", "checks[0].port"),
        ("id: Bad_Id\n", "id: String should match pattern"),
        ("signoffs:\n  - role: sre\n", "signoffs[0]: role 'sre' has no users and no usergroup: nobody could sign"),
        ("policy: {kind: threshold, go: 0.8, review: 0.9}\n", "review (0.9) must not exceed go"),
        ("reminders: {timezone: Mars/Olympus}\n", "unknown timezone"),
        ("reminders: {working_hours: '9-18'}\n", "working_hours must look like"),
    ],
)
def test_field_errors_name_the_path(tmp_path: Path, body: str, expected: str) -> None:
    text = GOOD_HEAD.replace("id: payments\n", "") if body.startswith("id:") else GOOD_HEAD
    problems = problems_of(write(tmp_path, text + body))
    assert any(expected in p for p in problems), problems


def test_reference_errors_are_all_reported(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        GOOD_HEAD
        + """\
checks:
  - {id: a, kind: tcp, host: h, port: 1}
  - {id: a, kind: tcp, host: h, port: 2}
  - {id: pen, kind: manual, owner: security}
signoffs:
  - {role: sre, users: [U1]}
risks:
  - {id: r, description: d, acceptor: cto}
override:
  approvers: {director: 1}
rollback:
  run: [x]
  allowed_roles: [ops]
  verify: nope
policy: {kind: risk_score, weights: {missing: 1}}
""",
    )
    problems = problems_of(path)
    for expected in (
        "checks[1]: duplicate id 'a'",
        "checks[2].owner: unknown role 'security'",
        "risks[0].acceptor: unknown role 'cto' (signoffs define: sre)",
        "override.approvers.director: unknown role",
        "rollback.allowed_roles[0]: unknown role 'ops'",
        "rollback.verify: unknown check 'nope'",
        "policy.weights.missing: not a check id or group",
    ):
        assert any(expected in p for p in problems), (expected, problems)
    assert all(p.startswith("payments.yml: ") for p in problems)


def test_several_problems_in_several_files_at_once(tmp_path: Path) -> None:
    write(tmp_path, GOOD_HEAD + "colour: blue\n", "a.yml")
    write(tmp_path, GOOD_HEAD.replace("payments", "other") + "checks: [{id: x, kind: nope}]\n", "b.yml")
    write(tmp_path, "id: [unclosed\n", "c.yaml")
    problems = problems_of(tmp_path)
    assert [p.split(":")[0] for p in problems] == ["a.yml", "b.yml", "c.yaml"]
    assert "invalid YAML" in problems[2]


def test_duplicate_gate_ids_across_files(tmp_path: Path) -> None:
    write(tmp_path, GOOD_HEAD, "a.yml")
    write(tmp_path, GOOD_HEAD, "b.yml")
    assert problems_of(tmp_path) == ["b.yml: gate id 'payments' is also used by a.yml"]


def test_validate_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(CONTRACT)]) == 0
    assert "ok:" in capsys.readouterr().out
    bad = write(tmp_path, GOOD_HEAD + "colour: blue\n")
    assert main(["validate", str(bad)]) == 2
    assert "payments.yml:4: colour: unknown key" in capsys.readouterr().err
    assert main(["validate", str(tmp_path / "missing.yml")]) == 2


def test_schema_command_prints_the_gate_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["additionalProperties"] is False
    assert {"id", "name", "channel", "checks", "signoffs", "policy"} <= set(schema["properties"])
    kinds = {d["properties"]["kind"]["const"] for k, d in schema["$defs"].items() if "kind" in d.get("properties", {})}
    assert {"command", "http", "prometheus", "github", "file", "tcp", "manual", "strict", "threshold"} <= kinds


def test_schema_accepts_the_contract_example() -> None:
    import jsonschema

    # As an editor sees the file: YAML dates (a freeze's from/to) are strings in JSON.
    as_json = json.loads(json.dumps(yaml.safe_load(CONTRACT.read_text()), default=str))
    jsonschema.validate(as_json, Gate.model_json_schema())


def test_a_threshold_review_band_needs_a_review_role(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        id: deploy
        name: Deploy
        channel: C1
        policy: {kind: threshold, go: 1.0, review: 0.9}
        """,
    )
    (problem,) = problems_of(path)
    assert "policy" in problem and "needs review_role" in problem
