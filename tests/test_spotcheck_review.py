"""`ores spotcheck` in a real terminal (pexpect), without one, and through export/import; the gate."""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

import pexpect

from filter_support import traces_file


def position(i: int, n: int) -> str:
    ansi = r"(?:\x1b\[[0-9;]*m)*"
    return f"{i}{ansi}/{ansi}{n}"


def _setup(run_ores, tmp_path: Path, n_good: int = 6) -> None:
    traces_file(tmp_path / "t.jsonl", n_good=n_good)
    result = run_ores("filter", "t.jsonl", "--no-judge", "--ws", "ws")
    assert result.returncode == 0, result.stderr


def _spawn(tmp_path: Path, *args: str) -> pexpect.spawn:
    env = {**os.environ, "COLUMNS": "120", "LINES": "40", "TERM": "xterm"}
    env.pop("ORES_WS", None)
    return pexpect.spawn(
        sys.executable, ["-m", "oresearch_cli", "spotcheck", "--ws", "ws", *args],
        cwd=str(tmp_path), env=env, encoding="utf-8", timeout=30, dimensions=(40, 120),
    )  # fmt: skip


def test_interactive_review_stops_and_resumes_then_the_gate_holds(run_ores, tmp_path: Path) -> None:
    _setup(run_ores, tmp_path)
    child = _spawn(tmp_path, "-n", "3", "--reviewer", "ana", "--max-reject", "0.4")
    child.expect("question")
    child.expect("Introduction")  # the report, rendered
    child.expect(r"\[a/r/s/q\]")
    child.sendline("a")
    child.expect("note")
    child.sendline("")
    child.expect(position(2, 3))
    child.expect(r"\[a/r/s/q\]")
    child.sendline("r")
    child.expect("note")
    child.sendline("thin sources")
    child.expect(r"\[a/r/s/q\]")
    child.sendline("q")  # stop with one left
    child.expect("resume")
    child.expect("gate: .*pending")
    child.expect(pexpect.EOF)

    child = _spawn(tmp_path, "-n", "3", "--max-reject", "0.4")
    child.expect(position(3, 3))  # resumes at the third trace
    child.sendline("r")
    child.expect("note")
    child.sendline("")
    child.expect("gate: .*held")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 3

    rows = run_ores(
        "ws",
        "sql",
        "select human_verdict, note, reviewer from spotcheck order by reviewed_at",
        "--ws",
        "ws",
        "--json",
    )
    verdicts = json.loads(rows.stdout)
    assert [v["human_verdict"] for v in verdicts] == ["accept", "reject", "reject"]
    assert verdicts[1]["note"] == "thin sources" and verdicts[0]["reviewer"] == "ana"


def test_without_a_terminal_it_never_waits(run_ores, tmp_path: Path) -> None:
    _setup(run_ores, tmp_path)
    result = run_ores("spotcheck", "-n", "3", "--ws", "ws", stdin="")
    assert result.returncode == 0
    assert "no terminal" in result.stderr and "pending" in result.stdout


def test_export_and_import_sheets_and_the_gate(run_ores, tmp_path: Path) -> None:
    _setup(run_ores, tmp_path)
    for name in ("s.csv", "s.jsonl", "s.html"):
        result = run_ores("spotcheck", "-n", "4", "--export", name, "--ws", "ws")
        assert result.returncode == 0, result.stderr
    html = (tmp_path / "s.html").read_text()
    assert html.count("class=card") == 4 and "download verdicts" in html and "## Introduction" in html
    with (tmp_path / "s.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4 and all(r["human_verdict"] == "" for r in rows)
    for row in rows:
        row["human_verdict"] = "accept"
        row["reviewer"] = "bo"
    rows[0]["human_verdict"] = "skip"
    with (tmp_path / "filled.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    result = run_ores("spotcheck", "-n", "4", "--import", "filled.csv", "--ws", "ws", "--json")
    assert result.returncode == 0, result.stderr
    gate = json.loads(result.stdout)
    assert (
        gate["status"] == "passed"
        and gate["accepted"] == 3
        and gate["skipped"] == 1
        and gate["reject_rate"] == 0
    )

    # a JSONL sheet with one reject out of four: 25% > 10%, held (exit 3)
    lines = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    for i, line in enumerate(lines):
        line["human_verdict"] = "reject" if i == 1 else "accept"
    (tmp_path / "filled.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    result = run_ores("spotcheck", "-n", "4", "--import", "filled.jsonl", "--ws", "ws", "--json")
    assert result.returncode == 3
    assert json.loads(result.stdout)["status"] == "held"

    bad = tmp_path / "bad.csv"
    bad.write_text("id,human_verdict\nnot-in-sample,accept\n")
    result = run_ores("spotcheck", "-n", "4", "--import", "bad.csv", "--ws", "ws")
    assert result.returncode == 2 and "not in this sample" in result.stderr
