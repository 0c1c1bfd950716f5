"""`ores export`: a Parquet dataset with a card that `datasets` loads; the gate and human rejects count."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from filter_support import traces_file


def test_accepted_set_loads_with_datasets_and_honours_the_gate(run_ores, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    traces_file(tmp_path / "t.jsonl", models={"planner": "plan-model", "worker": "work-model"})
    assert run_ores("filter", "t.jsonl", "--no-judge", "--ws", "ws").returncode == 0
    sheet = run_ores("spotcheck", "-n", "3", "--export", "s.jsonl", "--ws", "ws")
    assert sheet.returncode == 0, sheet.stderr
    rows = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    for i, row in enumerate(rows):
        row["human_verdict"] = "reject" if i == 0 else "accept"
    (tmp_path / "f.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert run_ores("spotcheck", "-n", "3", "--import", "f.jsonl", "--ws", "ws").returncode == 3  # held

    refused = run_ores("export", "out", "--ws", "ws")
    assert refused.returncode == 2 and "held" in refused.stderr and "--ignore-gate" in refused.stderr
    result = run_ores("export", "out", "--ws", "ws", "--ignore-gate")
    assert result.returncode == 0, result.stderr

    ds = datasets.load_dataset(
        "parquet", data_files=str(tmp_path / "out" / "data" / "*.parquet"), split="train"
    )
    assert ds.num_rows == 5  # 6 accepted, one rejected by the reviewer
    assert rows[0]["id"] not in ds["id"]
    assert {"id", "question", "trace", "report", "judge_overall"} <= set(ds.column_names)
    by_card = datasets.load_dataset(str(tmp_path / "out"), split="train")
    assert by_card.num_rows == 5
    card = (tmp_path / "out" / "README.md").read_text()
    assert card.startswith("---\n") and "| in this dataset | 5 |" in card and "held" in card
    # the card names the filters and the models that wrote the rows
    assert "| candidates | 9 |" in card and '"min_sources": 3' in card and "| truncated | 1 |" in card
    assert "- planner: plan-model (5)" in card and "- worker: work-model (5)" in card
    assert "- judge: none" in card
    assert set(ds["models"]) == {'{"planner": "plan-model", "worker": "work-model"}'}

    exported = run_ores("ws", "export", "accepted", "-o", "a.jsonl", "--ws", "ws")
    assert exported.returncode == 0 and len((tmp_path / "a.jsonl").read_text().splitlines()) == 5
