"""`ores filter` end to end through the real CLI: funnel, verdicts, explain, other input formats."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from conftest import DRB
from filter_support import good_trace, steps_log, traces_file, write_jsonl


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


def test_explain_a_named_run(run_ores, tmp_path: Path) -> None:
    traces_file(tmp_path / "t.jsonl", n_good=2, broken=False)
    first = _filter(run_ores, "t.jsonl")["run_id"]
    write_jsonl(tmp_path / "o.jsonl", [{"id": "g0", "question": "q?", "current_answer": "too short."}])
    _filter(run_ores, "o.jsonl")  # a newer run (where g0 is rejected): --run must find the first
    shown = run_ores("filter", "--explain", "g0", "--run", first, "--ws", "ws", "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["run_id"] == first and json.loads(shown.stdout)["verdict"] == "accepted"
    missing = run_ores("filter", "--explain", "g0", "--run", "nope", "--ws", "ws")
    assert missing.returncode == 2 and "ores ws runs" in missing.stderr
    assert len([line for line in missing.stderr.splitlines() if line.strip()]) == 1


def test_a_synth_runs_traces_through_filter_spotcheck_and_export(run_ores, tmp_path: Path) -> None:
    # What `ores synth` leaves in a workspace (its schema, its per-trace `models`), read by default.
    from oresearch_cli.stages.synth import SYNTH
    from oresearch_cli.workspace import Workspace

    from filter_support import variant

    models = json.dumps({"planner": "p-1", "summarizer": "s-1", "worker": "w-1"}, sort_keys=True)
    ws = Workspace.open(tmp_path / "ws")
    with ws.start_run(SYNTH, {"roles": "test"}, inputs=["seeds"]) as run:
        for i in range(4):
            question, trace = variant(i)
            run.append(
                {"id": f"s{i}", "question": question, "language": "en", "trace": trace, "models": models}
            )
        run.append({"id": "s-failed", "question": "q?", "status": "failed", "error": "timeout", "trace": ""})
        run.finish()

    data = _filter(run_ores)  # no TRACES: the latest synth output
    assert data["funnel"]["in"] == 5 and data["funnel"]["accepted"] == 4
    rows = pq.read_table(
        next((tmp_path / "ws" / "artifacts" / "filter").glob("*/filtered.parquet"))
    ).to_pylist()
    assert {r["source_run"] for r in rows} == {run.run_id}
    assert {r["models"] for r in rows if r["id"] != "s-failed"} == {models}
    failed = next(r for r in rows if r["id"] == "s-failed")
    assert failed["verdict"] == "rejected" and "synth-failed" in json.loads(failed["reasons"])

    sheet = run_ores("spotcheck", "-n", "2", "--export", "s.jsonl", "--ws", "ws")
    assert sheet.returncode == 0, sheet.stderr
    lines = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    (tmp_path / "f.jsonl").write_text(
        "".join(json.dumps({**x, "human_verdict": "accept"}) + "\n" for x in lines)
    )
    gate = run_ores("spotcheck", "-n", "2", "--import", "f.jsonl", "--ws", "ws", "--json")
    assert gate.returncode == 0 and json.loads(gate.stdout)["status"] == "passed"

    exported = run_ores("export", "out", "--ws", "ws")
    assert exported.returncode == 0, exported.stderr
    card = (tmp_path / "out" / "README.md").read_text()
    assert "- planner: p-1 (4)" in card and "passed" in card and "| synth-failed | 1 |" in card
    assert pq.read_table(tmp_path / "out" / "data" / "train-00000-of-00001.parquet").num_rows == 4


def test_traces_mostly_written_by_fallbacks_are_rejected(run_ores, tmp_path: Path) -> None:
    # Synth's `steps` log says who wrote each piece; 12 pieces a trace (filter_support.steps_log).
    from oresearch_cli.agent.authorship import PIECES
    from oresearch_cli.stages.synth import SYNTH
    from oresearch_cli.workspace import Workspace

    from filter_support import variant

    fallbacks = {"model": (), "half": ("step",), "junk": PIECES}
    ws = Workspace.open(tmp_path / "ws")
    with ws.start_run(SYNTH, {"roles": "test"}, inputs=["seeds"]) as run:
        for i, (name, fallback) in enumerate(fallbacks.items()):
            question, trace = variant(i)
            run.append({"id": name, "question": question, "language": "en", "trace": trace,
                        "status": "done", "steps": steps_log(fallback=fallback)})  # fmt: skip
        question, trace = variant(3)
        run.append(
            {"id": "imported", "question": question, "language": "en", "trace": trace, "status": "done"}
        )
        run.finish()

    data = _filter(run_ores)
    funnel = data["funnel"]
    assert {s["stage"]: s["dropped"] for s in funnel["stages"]}["rule authorship"] == 1
    assert funnel["reasons"] == {"fallback-heavy": 1} and funnel["accepted"] == 3
    assert data["rules"]["authorship"] == {"checked": 4, "failed": 1, "codes": {"fallback-heavy": 1}}
    written = funnel["authorship"]
    assert (written["model_written"], written["fallback_written"], written["model_share"]) == (18, 18, 0.5)
    assert (written["traces"], written["unrecorded"]) == (3, 1)
    assert written["pieces"]["report"] == {"model": 2, "fallback": 1}
    shown = run_ores("filter", "--explain", "junk", "--ws", "ws", "--json")
    explained = json.loads(shown.stdout)
    assert [r["code"] for r in explained["reasons"]] == ["fallback-heavy"]
    assert explained["details"]["authorship"]["fallback_share"] == 1.0

    # The threshold from the environment, then a flag over it; the human funnel shows the share.
    env = {"ORES_FILTER_MAX_FALLBACK_SHARE": "0.4"}
    result = run_ores("filter", "--no-judge", "--ws", "ws", "--json", env=env)
    assert json.loads(result.stdout)["funnel"]["reasons"] == {"fallback-heavy": 2}
    result = run_ores("filter", "--no-judge", "--ws", "ws", "--max-fallback-share", "1", env=env)
    assert result.returncode == 0, result.stderr
    assert "rule authorship" in result.stdout and "fallback-heavy" not in result.stdout
    assert "pieces written by the model: 50% (18 of 36, 3 traces; 1 without a steps log)" in result.stdout
