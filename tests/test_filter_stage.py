"""`ores filter` end to end through the real CLI: funnel, verdicts, explain, other input formats."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from filter_support import good_trace, traces_file, write_jsonl

from conftest import DRB


def _filter(run_ores, *args: str):
    result = run_ores("filter", *args, "--no-judge", "--ws", "ws", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_funnel_adds_up_and_every_rejection_has_reasons(run_ores, tmp_path: Path) -> None:
    traces_file(tmp_path / "t.jsonl")
    data = _filter(run_ores, "t.jsonl")
    funnel = data["funnel"]
    assert funnel["in"] == 9
    assert sum(s["dropped"] for s in funnel["stages"]) == funnel["in"] - funnel["accepted"]
    assert funnel["accepted"] == 6
    stages = {s["stage"]: s["dropped"] for s in funnel["stages"]}
    assert stages["rule status"] == 1 and stages["rule validation"] == 1 and stages["dedup"] == 1
    table = pq.read_table(
        next((tmp_path / "ws" / "artifacts" / "filter").glob("*/filtered.parquet"))
    ).to_pylist()
    by_id = {r["id"]: r for r in table}
    for row in table:
        reasons = json.loads(row["reasons"])
        assert (row["verdict"] == "rejected") == bool(reasons)
    assert "synth-failed" in json.loads(by_id["failed"]["reasons"])
    assert "truncated" in json.loads(by_id["cut"]["reasons"])
    assert by_id["dup"]["duplicate_of"] == "g0" or by_id["g0"]["duplicate_of"] == "dup"
    assert by_id["g1"]["report"].startswith("## Introduction")

    shown = run_ores("filter", "--explain", "cut", "--ws", "ws")
    assert shown.returncode == 0, shown.stderr
    assert (
        "rejected" in shown.stdout and "truncated" in shown.stdout and "report never closed" in shown.stdout
    )
    human = run_ores("filter", "t.jsonl", "--no-judge", "--ws", "ws")
    assert "rule validation" in human.stdout and "top rejection reasons" in human.stdout


def test_report_only_drb_articles_and_other_field_names(run_ores, tmp_path: Path) -> None:
    data = _filter(run_ores, str(DRB / "sample_reports_claude-3-7-sonnet.jsonl"))
    assert data["funnel"]["in"] == 10
    rows = pq.read_table(
        next((tmp_path / "ws" / "artifacts" / "filter").glob("*/filtered.parquet"))
    ).to_pylist()
    assert all(json.loads(r["details"])["mode"] == "report" for r in rows)
    assert all(r["question"] for r in rows)  # from `prompt`
    assert all(r["language"] in ("zh", "en") for r in rows)

    write_jsonl(
        tmp_path / "o.jsonl",
        [{"id": 1, "question": "What do photosynthesis' two stages do?", "current_answer": good_trace()}],
    )
    data = _filter(run_ores, "o.jsonl", "--field", "current_answer")
    assert data["funnel"]["accepted"] == 1


def test_yaml_flags_and_disabled_rules(run_ores, tmp_path: Path) -> None:
    traces_file(tmp_path / "t.jsonl")
    (tmp_path / "f.yaml").write_text("filter:\n  min_sources: 10\n")
    data = _filter(run_ores, "t.jsonl", "--config", "f.yaml")
    assert data["funnel"]["accepted"] == 0 and data["funnel"]["reasons"]["too-few-sources"] >= 6
    data = _filter(run_ores, "t.jsonl", "--config", "f.yaml", "--disable", "sources,status", "--no-dedup")
    assert data["funnel"]["accepted"] == 7  # 6 good + the duplicate; the empty failed trace fails validation
    assert all(not s["stage"].endswith(("sources", "status", "dedup")) for s in data["funnel"]["stages"])


def test_user_errors_are_one_line_with_exit_2(run_ores, tmp_path: Path) -> None:
    result = run_ores("filter", "--no-judge", "--ws", "ws")
    assert result.returncode == 2 and "ores synth" in result.stderr
    traces_file(tmp_path / "t.jsonl")
    result = run_ores("filter", "t.jsonl", "--ws", "ws", env={"ORES_JUDGE_MODEL": "", "ORES_LLM_MODEL": ""})
    assert result.returncode == 2 and "--no-judge" in result.stderr
    result = run_ores("filter", "t.jsonl", "--no-judge", "--disable", "nope", "--ws", "ws")
    assert result.returncode == 2 and "unknown rule" in result.stderr
    assert not (tmp_path / "ws" / "artifacts" / "filter").exists()


def test_list_rules(run_ores) -> None:
    result = run_ores("filter", "--list-rules", "--json")
    data = json.loads(result.stdout)
    assert "truncated" in data["rules"] and "judge-failed" in data["judge"]
