"""`ores trace validate|show|stats` end to end: the real CLI in a subprocess, and in-process via CliRunner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import oresearch_cli.cli.trace_cmd  # noqa: F401  (registers `trace` on the app)
from oresearch_cli.cli import app

ROOT = Path(__file__).parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "trace_example.txt"
DRB = ROOT / "data" / "deepresearch_bench" / "sample_reports_claude-3-7-sonnet.jsonl"
EXAMPLE = FIXTURE.read_text(encoding="utf-8")
runner = CliRunner()


def ores(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "oresearch_cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def invoke(*args: str, stdin: str | None = None):
    return runner.invoke(app, list(args), input=stdin, env={"COLUMNS": "200", "NO_COLOR": "1"})


# --- subprocess: the installed entry point, exit codes, stdin ---


def test_validate_fixture_subprocess() -> None:
    result = ores("trace", "validate", str(FIXTURE), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["summary"] == {"traces": 1, "valid": 1, "without_problems": 1, "problems_by_code": {}}


def test_stats_drb_articles_subprocess() -> None:
    # The done-criterion: report bodies give references and in-text citations for all ten.
    result = ores("trace", "stats", "--field", "article", str(DRB), "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)["traces"]
    assert len(rows) == 10
    assert all(r["mode"] == "report" and r["references"] > 0 and r["citations"] > 0 for r in rows)
    table = invoke("trace", "stats", "--field", "article", str(DRB))
    assert "total (10)" in table.stdout


def test_malformed_jsonl_exits_2_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"trace": "<think>t</think>"}\n{"trace": oops}\n', encoding="utf-8")
    result = ores("trace", "validate", str(bad))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{bad}:2:" in lines[0]
    assert result.stdout == ""


def test_strict_exits_1_on_problems_and_stdin_raw_text() -> None:
    broken = EXAMPLE.replace("</think>", "", 1)
    strict = ores("trace", "validate", "-", "--strict", stdin=broken)
    assert strict.returncode == 1
    assert "stdin:9: error [unclosed-tag] (subtask 1)" in strict.stdout
    assert invoke("trace", "validate", "-", stdin=broken).exit_code == 0
    assert invoke("trace", "validate", "-", "--strict", stdin=EXAMPLE).exit_code == 0


# --- in-process ---


def test_validate_jsonl_auto_detects_the_trace_field(tmp_path: Path) -> None:
    path = tmp_path / "synth.jsonl"
    rows = [
        {"id": "good", "question": "q", "trace": EXAMPLE},
        {"id": "bad", "question": "q", "trace": EXAMPLE.replace("<think>", "<think>x <plan>", 1)},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    result = invoke("trace", "validate", str(path))
    assert result.exit_code == 0, result.output
    assert "bad:9: error [tag-in-think] (subtask 1)" in result.output
    assert "good:" not in result.output
    assert "problems by code" in result.output
    data = json.loads(invoke("trace", "validate", str(path), "--json").stdout)
    assert [t["valid"] for t in data["traces"]] == [True, False]
    assert data["summary"]["problems_by_code"]["tag-in-think"] == 1


def test_validate_report_only_on_drb() -> None:
    data = json.loads(
        invoke("trace", "validate", "--field", "article", "--report-only", "--json", str(DRB)).stdout
    )
    assert data["summary"]["traces"] == 10
    codes = set(data["summary"]["problems_by_code"])
    assert "missing-subtask-list" not in codes and "missing-report" not in codes


def test_validate_stdin_jsonl() -> None:
    line = json.dumps({"id": 7, "text": EXAMPLE}) + "\n"
    data = json.loads(invoke("trace", "validate", "-", "--json", stdin=line).stdout)
    assert data["traces"][0]["id"] == "7" and data["traces"][0]["valid"]


def test_missing_field_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text('{"id": 1, "other": "x"}\n', encoding="utf-8")
    result = invoke("trace", "validate", str(path))
    assert result.exit_code != 0
    assert "pass --field" in str(result.exception)


def test_show_folds_observations_unless_full() -> None:
    folded = invoke("trace", "show", str(FIXTURE))
    assert folded.exit_code == 0, folded.output
    assert "subtask 1:" in folded.output and "subtask 2:" in folded.output
    assert "more lines" in folded.output
    assert "search light-dependent reactions products | thylakoid membrane photosynthesis" in folded.output
    assert "Introduction" in folded.output
    full = invoke("trace", "show", str(FIXTURE), "--full")
    assert "more lines" not in full.output
    assert "Thylakoids are membrane-bound" in full.output


def test_show_selects_by_id_or_index() -> None:
    by_id = invoke("trace", "show", str(DRB), "--field", "article", "--id", "52")
    assert by_id.exit_code == 0, by_id.output
    assert "Duan Yongping" in by_id.output and "question" in by_id.output
    by_index = invoke("trace", "show", str(DRB), "--field", "article", "--index", "2")
    assert "保险" in by_index.output
    missing = invoke("trace", "show", str(DRB), "--field", "article", "--index", "11")
    assert missing.exit_code != 0 and "out of range" in str(missing.exception)


@pytest.mark.parametrize("args", [["--json"], []])
def test_stats_of_a_trace(args: list[str]) -> None:
    result = invoke("trace", "stats", str(FIXTURE), *args)
    assert result.exit_code == 0, result.output
    if args:
        row = json.loads(result.stdout)["traces"][0]
        assert (row["subtasks"], row["tool_calls"], row["references"], row["observed_urls"]) == (2, 4, 4, 4)
    else:
        assert "total (1)" in result.output


def test_stats_show_the_share_of_pieces_the_model_wrote(tmp_path: Path) -> None:
    # Records from `ores synth` carry its `steps` log: 12 pieces a trace (filter_support.steps_log).
    from oresearch_cli.agent.authorship import PIECES

    from filter_support import steps_log

    rows = [
        {"id": "model", "trace": EXAMPLE, "steps": steps_log()},
        {"id": "mixed", "trace": EXAMPLE, "steps": steps_log(fallback=("step", "report"))},
        {"id": "junk", "trace": EXAMPLE, "steps": json.loads(steps_log(fallback=PIECES))},  # parsed: fine too
        {"id": "imported", "trace": EXAMPLE},
    ]
    path = tmp_path / "traces.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    result = invoke("trace", "stats", str(path), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    shares = {r["id"]: r["authorship"] and r["authorship"]["model_share"] for r in data["traces"]}
    assert shares == {"model": 1.0, "mixed": 0.4167, "junk": 0.0, "imported": None}
    mixed = next(r["authorship"] for r in data["traces"] if r["id"] == "mixed")
    assert (mixed["model_written"], mixed["fallback_written"]) == (5, 7)
    assert mixed["pieces"]["step"] == {"model": 0, "fallback": 6}
    total = data["total"]["authorship"]
    assert [total[k] for k in ("model_written", "fallback_written", "traces", "unrecorded")] == [17, 19, 3, 1]
    table = invoke("trace", "stats", str(path))
    assert "model share" in table.stdout
    lines = {line.split("│")[1].strip(): line for line in table.stdout.splitlines() if line.count("│") > 2}
    shown = {name: line.split("│")[-2].strip() for name, line in lines.items()}
    assert shown == {"model": "100%", "mixed": "42%", "junk": "0%", "imported": "", "total (4)": "47%"}
    # Traces without a steps log: no share anywhere.
    plain = invoke("trace", "stats", str(FIXTURE))
    assert "model share" not in plain.stdout
    row = json.loads(invoke("trace", "stats", str(FIXTURE), "--json").stdout)
    assert row["traces"][0]["authorship"] is None and row["total"]["authorship"] is None
