"""The accepted set as a Hugging Face compatible Parquet dataset with a dataset card.

    OUT/README.md                               card: YAML header (configs, languages), counts,
                                                filters, models, spot-check gate
    OUT/data/train-00000-of-00001.parquet       id, question, language, trace, report, judge_*

`datasets.load_dataset("parquet", data_files="OUT/data/*.parquet")` and `load_dataset("OUT")` read
it. Accepted = the filter's accepted traces minus those a human rejected in a spot check. A batch
the spot-check gate holds is refused unless `ignore_gate`. The rows also become the workspace's
`accepted` artifact, so `ores ws export accepted -o FILE` works too.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pyarrow.parquet as pq

from oresearch_cli.errors import InputError, WorkspaceError
from oresearch_cli.records import cannot_create
from oresearch_cli.workspace import (
    ArtifactRecord,
    RunStatus,
    StageSpec,
    Status,
    Workspace,
)
from oresearch_cli.workspace.records import to_table


@dataclass
class AcceptedRecord(ArtifactRecord):
    """A row of the exported dataset and of the workspace's `accepted` artifact."""

    KIND: ClassVar[str] = "accepted"

    id: str
    question: str | None
    language: str | None
    trace: str | None
    report: str | None
    judge_overall: float | None
    judge_scores: str | None
    source_run: str
    models: str | None
    status: Status = Status.DONE


EXPORT = StageSpec.of("export", AcceptedRecord)
DATA_FILE = "data/train-00000-of-00001.parquet"


@dataclass
class ExportResult:
    out_dir: Path
    rows: int
    filtered_run: str
    human_rejected: int
    gate: dict[str, Any] | None


def _spotcheck_of(ws: Workspace, filtered_run: str) -> tuple[set[str], dict[str, Any] | None]:
    """Ids humans rejected in spot checks of `filtered_run`, and the newest gate on it."""
    from oresearch_cli.stages.spotcheck import GATE_FILE, SPOTCHECK

    rejected: set[str] = set()
    gate = None
    for run in sorted(ws.runs(stage=SPOTCHECK.name), key=lambda r: r.started_at):
        if run.config.get("filtered_run") != filtered_run or run.status != RunStatus.DONE:
            continue
        for artifact in ws.artifacts(run_id=run.run_id, kind=SPOTCHECK.kind):
            for record in ws.read_artifact(artifact):  # checked against its sha256, like every read
                if record.get("human_verdict") == "reject":
                    rejected.add(str(record["id"]))
                else:
                    rejected.discard(str(record["id"]))
        path = ws.run_dir(SPOTCHECK.name, run.run_id) / GATE_FILE
        if path.exists():
            gate = {**json.loads(path.read_text(encoding="utf-8")), "run_id": run.run_id}
    return rejected, gate


@dataclass
class AcceptedSet:
    """The accepted traces of one filter run: its verdict rows, the accepted ones (minus human
    rejections), and the spot-check gate on it."""

    filtered_run: str
    rows: list[dict[str, Any]]
    accepted: list[dict[str, Any]]
    rejected: set[str]
    gate: dict[str, Any] | None


def accepted_set(ws: Workspace, filtered_run: str | None = None, ignore_gate: bool = False) -> AcceptedSet:
    """What `ores export` and `ores sft` train on. A batch the spot-check gate holds is refused
    unless `ignore_gate`."""
    from oresearch_cli.stages.filter import filtered_artifact

    artifact = filtered_artifact(ws, filtered_run)
    rejected, gate = _spotcheck_of(ws, artifact.run_id)
    if gate and gate.get("status") == "held" and not ignore_gate:
        rate = gate.get("reject_rate")
        raise WorkspaceError(
            f"filter run {artifact.run_id} is held by the spot-check gate (reject rate {rate:.0%}); "
            "tighten the filter and rerun it, or pass --ignore-gate"
        )
    rows = ws.read_artifact(artifact)
    accepted = [r for r in rows if r.get("verdict") == "accepted" and str(r["id"]) not in rejected]
    return AcceptedSet(artifact.run_id, rows, accepted, rejected, gate)


def check_export_dir(out_dir: Path, force: bool = False) -> None:
    """Refuse, before anything is read or written, an export folder that is a file, one that holds
    files already (unless `force`: then README.md and the data file are overwritten, other files
    kept), or one that cannot be created or written."""
    where = f"export {out_dir}"
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{where}: is a file, not a directory; name a new or empty directory")
    if out_dir.is_dir():
        entries = sorted(p.name for p in out_dir.iterdir())
        if entries and not force:
            shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
            raise InputError(
                f"{where}: the directory is not empty ({shown}); name a new or empty directory, "
                f"or pass --force to overwrite its README.md and {DATA_FILE}"
            )
        if not os.access(out_dir, os.W_OK | os.X_OK):
            raise InputError(f"{where}: the directory is not writable; fix its permissions or choose another")
        return
    reason = cannot_create(out_dir)
    if reason:
        raise InputError(f"{where}: {reason}; choose a path in a writable directory")


def export_accepted(
    ws_path: str | Path,
    out_dir: Path,
    filtered_run: str | None = None,
    ignore_gate: bool = False,
    force: bool = False,
) -> ExportResult:
    """Write the accepted set to `out_dir` (refused when it is a file, or holds files unless
    `force`) and record it as the workspace's `accepted` artifact."""
    out_dir = Path(out_dir)
    check_export_dir(out_dir, force)
    ws = Workspace.open(ws_path, create=False)
    found = accepted_set(ws, filtered_run, ignore_gate)
    rows, accepted, rejected, gate = found.rows, found.accepted, found.rejected, found.gate
    records = [
        AcceptedRecord(
            id=str(r["id"]),
            question=r.get("question"),
            language=r.get("language"),
            trace=r.get("trace"),
            report=r.get("report"),
            judge_overall=r.get("judge_overall"),
            judge_scores=r.get("judge_scores"),
            source_run=found.filtered_run,
            models=r.get("models"),
        ).to_row()
        for r in accepted
    ]
    filter_run = ws.get_run(found.filtered_run)
    card = dataset_card(rows, records, filter_run.config, gate, len(rejected & {str(r["id"]) for r in rows}))
    try:
        (out_dir / "data").mkdir(parents=True, exist_ok=True)
        pq.write_table(to_table(records, AcceptedRecord), out_dir / DATA_FILE)
        (out_dir / "README.md").write_text(card, encoding="utf-8")
    except OSError as exc:
        raise InputError(
            f"export {out_dir}: cannot write the dataset ({exc.strerror or exc}); "
            "name a new or empty directory you can write to"
        ) from None
    with ws.start_run(
        EXPORT, {"filtered_run": found.filtered_run, "out": str(out_dir)}, [found.filtered_run]
    ) as run:
        for record in records:
            run.append(record)
    return ExportResult(out_dir, len(records), found.filtered_run, len(rejected), gate)


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if n < limit:
            return name
    return "100K<n<1M"


def _writers(records: list[dict[str, Any]]) -> list[tuple[str, Counter[str]]]:
    """Role -> how many of the rows each model wrote (from synth's per-trace `models`)."""
    roles: dict[str, Counter[str]] = {}
    for r in records:
        try:
            models = json.loads(r.get("models") or "{}")
        except ValueError:
            continue
        for role, model in models.items():
            roles.setdefault(str(role), Counter())[str(model)] += 1
    return sorted(roles.items())


def dataset_card(
    filtered: list[dict[str, Any]],
    records: list[dict[str, Any]],
    filter_config: dict[str, Any],
    gate: dict[str, Any] | None,
    human_rejected: int,
) -> str:
    languages = Counter(str(r.get("language") or "und") for r in records)
    writers = _writers(records)
    reasons: Counter[str] = Counter()
    for r in filtered:
        if r.get("verdict") == "rejected":
            reasons.update(json.loads(r.get("reasons") or "[]"))
    cfg = filter_config.get("filter", {})
    judge_model = filter_config.get("judge_model")
    lang_yaml = "\n".join(f"- {lang}" for lang in sorted(languages) if lang != "und") or "- en"
    header = (
        "---\n"
        f"language:\n{lang_yaml}\n"
        "task_categories:\n- text-generation\n"
        f"size_categories:\n- {_size_category(len(records))}\n"
        "tags:\n- deep-research\n- agent-traces\n- o-researcher\n"
        "configs:\n- config_name: default\n  data_files:\n  - split: train\n"
        f"    path: {DATA_FILE}\n"
        "---\n"
    )
    settings = {k: v for k, v in cfg.items() if k not in ("leak_markers", "judge", "rules")}
    disabled = [k for k, v in (cfg.get("rules") or {}).items() if not v]
    gate_line = (
        f"{gate['status']} (reject rate {gate.get('reject_rate')}, max {gate.get('max_reject')}, "
        f"{gate.get('reviewed')}/{gate.get('sample')} reviewed)"
        if gate
        else "no spot check was run"
    )
    top = "\n".join(f"| {code} | {n} |" for code, n in reasons.most_common(15)) or "| (none) | 0 |"
    lines = [
        header,
        "# O-Researcher style deep-research traces (ores)",
        "",
        "Synthesized multi-agent research traces in the O-Researcher tag format, filtered by `ores filter` "
        "(hard rules, near-duplicate removal, LLM judge) and spot-checked by a person (`ores spotcheck`).",
        "",
        "## Counts",
        "",
        "| | traces |",
        "|---|---|",
        f"| candidates | {len(filtered)} |",
        f"| accepted by the filter | {sum(r.get('verdict') == 'accepted' for r in filtered)} |",
        f"| rejected by a human in the spot check | {human_rejected} |",
        f"| in this dataset | {len(records)} |",
        "",
        "Languages: " + ", ".join(f"{lang} {n}" for lang, n in languages.most_common()),
        "",
        "## Filters",
        "",
        f"Rule settings: `{json.dumps(settings, sort_keys=True)}`"
        + (f"; rules off: {', '.join(disabled)}" if disabled else ""),
        "",
        f"Judge: {judge_model or 'not run'}"
        + (f", thresholds `{json.dumps(cfg.get('judge', {}), sort_keys=True)}`" if judge_model else ""),
        "",
        f"Spot-check gate: {gate_line}",
        "",
        "Top rejection reasons:",
        "",
        "| reason | traces |",
        "|---|---|",
        top,
        "",
        "## Models used",
        "",
        *(
            [
                f"- {role}: " + ", ".join(f"{m} ({n})" for m, n in counts.most_common())
                for role, counts in writers
            ]
            or ["- trace writers: not recorded in the input (traces not made by `ores synth`)"]
        ),
        f"- judge: {judge_model or 'none'}",
        f"- traces: from `{filtered[0].get('source_run') if filtered else ''}`",
        "",
        "## Fields",
        "",
        "`id`, `question`, `language`, `trace` (the full tagged trace), `report` (its final report), "
        "`judge_overall` (0-10), `judge_scores` (JSON: criterion -> score, reason), `source_run`, "
        "`models` (JSON: role -> model that wrote the trace).",
        "",
    ]
    return "\n".join(lines)
