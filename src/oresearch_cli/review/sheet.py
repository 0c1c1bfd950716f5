"""Review sheets: the sample written out for reviewers (CSV, JSONL, or a static HTML page), and
their verdicts read back.

A sheet has one row per sampled trace with blank `human_verdict`, `note` and `reviewer` columns.
The HTML page shows each trace's question, judge scores and report, lets the reviewer pick
accept/reject/skip and write a note, and downloads the verdicts as a CSV that `--import` reads.
"""

from __future__ import annotations

import csv
import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from oresearch_cli.errors import InputError
from oresearch_cli.records import read_records

COLUMNS = (
    "id",
    "language",
    "band",
    "judge_overall",
    "question",
    "report",
    "judge_scores",
    "human_verdict",
    "note",
    "reviewer",
)
_VERDICTS = {
    "accept": "accept", "accepted": "accept", "a": "accept", "yes": "accept", "y": "accept", "ok": "accept", "1": "accept",
    "reject": "reject", "rejected": "reject", "r": "reject", "no": "reject", "n": "reject", "0": "reject",
    "skip": "skip", "skipped": "skip", "s": "skip",
}  # fmt: skip


def normalize_verdict(value: Any) -> str | None:
    """accept, reject or skip; None for a blank cell (not reviewed)."""
    text = "" if value is None else str(value).strip().lower()
    if not text:
        return None
    return _VERDICTS.get(text, "?")


def sheet_rows(items: Sequence[dict[str, Any]], verdicts: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for item in items:
        v = verdicts.get(item["id"], {})
        rows.append(
            {
                "id": item["id"],
                "language": item.get("language"),
                "band": item.get("band"),
                "judge_overall": item.get("judge_overall"),
                "question": item.get("question") or "",
                "report": item.get("report") or "",
                "judge_scores": item.get("judge_scores") or "",
                "human_verdict": v.get("human_verdict") or "",
                "note": v.get("note") or "",
                "reviewer": v.get("reviewer") or "",
            }
        )
    return rows


def export_sheet(
    path: Path, items: Sequence[dict[str, Any]], verdicts: dict[str, dict[str, Any]], title: str
) -> str:
    """Write the sheet; the format follows the suffix (.csv, .jsonl, .html). Returns the format."""
    rows = sheet_rows(items, verdicts)
    suffix = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".csv":
        with path.open("w", encoding="utf-8", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        return "csv"
    if suffix in (".jsonl", ".ndjson"):
        with path.open("w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        return "jsonl"
    if suffix in (".html", ".htm"):
        path.write_text(_html(rows, title), encoding="utf-8")
        return "html"
    raise InputError(f"{path}: cannot tell the sheet format; name it .csv, .jsonl or .html")


def import_sheet(path: Path, sample_ids: Sequence[str]) -> list[dict[str, Any]]:
    """Verdicts of a filled-in sheet (CSV or JSONL): rows with a blank verdict are left out."""
    records = read_records(path)
    known = set(sample_ids)
    verdicts = []
    for record in records:
        data = record.data
        if "id" not in data:
            raise InputError(
                f"{record.origin}: no 'id' column; import a sheet made by `ores spotcheck --export`"
            )
        verdict = normalize_verdict(data.get("human_verdict", data.get("verdict")))
        if verdict is None:
            continue
        if verdict == "?":
            raise InputError(
                f"{record.origin}: verdict {data.get('human_verdict')!r} is not accept, reject or skip; fix that cell"
            )
        item_id = str(data["id"])
        if item_id not in known:
            raise InputError(
                f"{record.origin}: trace {item_id!r} is not in this sample; export the sheet again "
                "(same --n/--seed and filter run) and fill that one in"
            )
        verdicts.append(
            {
                "id": item_id,
                "human_verdict": verdict,
                "note": str(data.get("note") or ""),
                "reviewer": str(data.get("reviewer") or ""),
            }
        )
    return verdicts


def _scores_html(raw: Any) -> str:
    if not raw:
        return "<p class=muted>no judge scores</p>"
    try:
        scores = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        return ""
    rows = "".join(
        f"<tr><td>{html.escape(c)}</td><td>{s.get('score')}</td><td>{html.escape(str(s.get('reason', '')))}</td></tr>"
        for c, s in scores.items()
    )
    return f"<table class=scores><tr><th>criterion</th><th>score</th><th>reason</th></tr>{rows}</table>"


def _html(rows: list[dict[str, Any]], title: str) -> str:
    cards = []
    for n, row in enumerate(rows, start=1):
        rid = html.escape(str(row["id"]), quote=True)
        options = "".join(
            f'<option value="{v}"{" selected" if row["human_verdict"] == v else ""}>{v or "-"}</option>'
            for v in ("", "accept", "reject", "skip")
        )
        cards.append(
            f'<section class=card data-id="{rid}"><h2>{n}. {rid} <small>{html.escape(str(row["language"]))} · '
            f"judge {row['judge_overall'] if row['judge_overall'] is not None else '-'} · band {html.escape(str(row['band']))}</small></h2>"
            f"<p class=q>{html.escape(row['question'])}</p>{_scores_html(row['judge_scores'])}"
            f"<details><summary>report</summary><pre>{html.escape(row['report'])}</pre></details>"
            f"<p><label>verdict <select class=verdict>{options}</select></label> "
            f'<label>note <input class=note size=60 value="{html.escape(row["note"], quote=True)}"></label></p></section>'
        )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body{{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}}
.card{{border:1px solid #ccc;border-radius:6px;padding:.5rem 1rem;margin:1rem 0}}
pre{{white-space:pre-wrap;background:#f7f7f7;padding:.5rem}} .q{{font-weight:600}}
.scores td,.scores th{{padding:0 .5rem;text-align:left;font-size:.9rem}} .muted{{color:#888}}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Mark each trace accept, reject or skip, then <label>reviewer <input id=reviewer></label>
<button id=download>download verdicts (CSV)</button> and run <code>ores spotcheck --import FILE.csv</code>.</p>
{"".join(cards)}
<script>
function cell(v){{v=String(v||"");return /[",\\n]/.test(v)?'"'+v.replace(/"/g,'""')+'"':v}}
document.getElementById("download").onclick=function(){{
  var who=document.getElementById("reviewer").value, lines=["id,human_verdict,note,reviewer"];
  document.querySelectorAll(".card").forEach(function(c){{
    lines.push([c.dataset.id,c.querySelector(".verdict").value,c.querySelector(".note").value,who].map(cell).join(","));
  }});
  var a=document.createElement("a");
  a.href=URL.createObjectURL(new Blob([lines.join("\\n")+"\\n"],{{type:"text/csv"}}));
  a.download="spotcheck-verdicts.csv"; a.click();
}};
</script></body></html>
"""
