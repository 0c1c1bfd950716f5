"""`ores spotcheck`: a human looks at a stratified sample of accepted traces; the gate passes or holds.

Verdicts are a `spotcheck` artifact: each session is a run (stage `spotcheck`) whose config is the
sample (filter run, n, seed), appending one flushed JSONL line per verdict; a later session with
the same sample resumes (`start_run(resume=True)`), and its Parquet holds every verdict so far.
Record: `id, human_verdict (accept|reject|skip), note, reviewer, judge_overall, reviewed_at, language, band,
filtered_run, status`.
"""

from __future__ import annotations

import getpass
import json
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar

from oresearch_cli.config import bounded, load_recipe, resolve
from oresearch_cli.errors import InputError
from oresearch_cli.review.gate import Gate, evaluate_gate
from oresearch_cli.review.sample import band, draw_sample
from oresearch_cli.review.sheet import export_sheet, import_sheet
from oresearch_cli.workspace import (
    ArtifactRecord,
    RunContext,
    RunStatus,
    StageSpec,
    Status,
    Workspace,
    config_hash,
    iter_source,
)

GATE_FILE = "gate.json"


@dataclass
class ReviewRecord(ArtifactRecord):
    """A row of `spotcheck`: a person's verdict on one sampled trace (status `skipped` when they
    looked and left it for later)."""

    KIND: ClassVar[str] = "spotcheck"

    id: str
    human_verdict: str  # accept | reject | skip
    note: str
    reviewer: str
    judge_overall: float | None
    reviewed_at: str
    language: str | None
    band: str | None
    filtered_run: str
    status: Status = Status.DONE


SPOTCHECK = StageSpec.of("spotcheck", ReviewRecord)
STAGE = SPOTCHECK.name
KIND = SPOTCHECK.kind


@dataclass(frozen=True)
class SpotcheckSettings:
    """What a recipe's `spotcheck:` section (or ORES_SPOTCHECK_<KEY>) may set."""

    n: int = bounded(50, low=1)
    seed: int = 0
    max_reject: float = bounded(0.10, low=0.0, high=1.0)


@dataclass(frozen=True)
class SpotcheckOptions(SpotcheckSettings):
    """The settings plus which filter run to sample and who reviews."""

    filtered_run: str | None = None  # default: the latest `filtered` artifact
    reviewer: str | None = None


def spotcheck_options(
    flags: dict[str, Any],
    config: str | Path | None = None,
    environ: dict[str, str] | None = None,
    **rest: Any,
) -> SpotcheckOptions:
    """SpotcheckOptions from flags (None: unset) over the recipe's `spotcheck:` section over
    ORES_SPOTCHECK_<KEY> over the defaults; `rest`: filtered_run, reviewer."""
    settings = resolve(SpotcheckSettings, load_recipe(config), "spotcheck", flags, environ)
    return SpotcheckOptions(**rest, **asdict(settings))


@dataclass
class Sample:
    filtered_run: str
    n_accepted: int
    items: list[dict[str, Any]]
    config: dict[str, Any]

    @property
    def ids(self) -> list[str]:
        return [i["id"] for i in self.items]

    @property
    def config_hash(self) -> str:
        return config_hash(self.config)


def default_reviewer() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "reviewer"


def open_sample(ws: Workspace, options: SpotcheckOptions) -> Sample:
    from oresearch_cli.stages.filter import filtered_artifact

    artifact = filtered_artifact(ws, options.filtered_run)
    accepted = [r for r in ws.read_artifact(artifact) if r.get("verdict") == "accepted"]
    if not accepted:
        raise InputError(
            f"filter run {artifact.run_id} accepted no traces; nothing to spot-check (see `ores filter --explain ID`)"
        )
    items = draw_sample(accepted, options.n, options.seed)
    for item in items:
        item["band"] = band(item.get("judge_overall"))
    config = {"filtered_run": artifact.run_id, "n": options.n, "seed": options.seed}
    return Sample(artifact.run_id, len(accepted), items, config)


def load_verdicts(ws: Workspace, sample: Sample) -> dict[str, dict[str, Any]]:
    """Every verdict given on this sample so far (the newest per trace), finished sessions or not."""
    verdicts: dict[str, dict[str, Any]] = {}
    for source in ws.resume_sources(STAGE, sample.config_hash):
        for record in iter_source(source):
            verdicts[str(record["id"])] = record
    return verdicts


def gate(ws: Workspace, sample: Sample, max_reject: float) -> Gate:
    return evaluate_gate(sample.ids, list(load_verdicts(ws, sample).values()), max_reject)


class Session:
    """One review session: a run appending verdicts. Use as a context manager; on leaving it the
    run is finished (its Parquet then holds every verdict on the sample) and the gate written."""

    def __init__(self, ws: Workspace, sample: Sample, options: SpotcheckOptions) -> None:
        self.ws = ws
        self.sample = sample
        self.options = options
        self.reviewer = options.reviewer or default_reviewer()
        self.by_id = {i["id"]: i for i in sample.items}
        self.run: RunContext = ws.start_run(
            SPOTCHECK, sample.config, inputs=[sample.filtered_run], resume=True
        )
        self.done = {i for i, status in self.run.prior.items() if status == Status.DONE}
        self.gate: Gate | None = None

    def record(self, item_id: str, verdict: str, note: str = "", reviewer: str | None = None) -> None:
        item = self.by_id[item_id]
        self.run.append(
            ReviewRecord(
                id=item_id,
                human_verdict=verdict,
                note=note,
                reviewer=reviewer or self.reviewer,
                judge_overall=item.get("judge_overall"),
                reviewed_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                language=item.get("language"),
                band=item.get("band"),
                filtered_run=self.sample.filtered_run,
                status=Status.DONE if verdict in ("accept", "reject") else Status.SKIPPED,
            )
        )
        if verdict in ("accept", "reject"):
            self.done.add(item_id)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc_type is not None and not issubclass(exc_type, KeyboardInterrupt | EOFError):
            self.run.__exit__(exc_type, exc, tb)
            return
        # A quit, Ctrl-C or closed input still keeps every verdict: finish the run.
        self.run.finish()
        self.gate = gate(self.ws, self.sample, self.options.max_reject)
        (self.run.dir / GATE_FILE).write_text(json.dumps(self.gate.to_dict(), indent=2), encoding="utf-8")


def import_verdicts(ws: Workspace, sample: Sample, path: Path, options: SpotcheckOptions) -> tuple[int, Gate]:
    verdicts = import_sheet(path, sample.ids)  # read and check it all before writing anything
    with Session(ws, sample, options) as session:
        for v in verdicts:
            session.record(v["id"], v["human_verdict"], v["note"], v["reviewer"] or None)
    assert session.gate is not None
    return len(verdicts), session.gate


def export_verdict_sheet(ws: Workspace, sample: Sample, path: Path) -> str:
    title = f"ores spotcheck: filter run {sample.filtered_run}, {len(sample.items)} traces"
    return export_sheet(path, sample.items, load_verdicts(ws, sample), title)


def latest_gate(ws: Workspace) -> dict[str, Any] | None:
    """The gate written by the newest finished spotcheck session, if any."""
    for run in ws.runs(stage=STAGE):
        path = ws.run_dir(STAGE, run.run_id) / GATE_FILE
        if run.status == RunStatus.DONE and path.exists():
            data = json.loads(path.read_text(encoding="utf-8"))
            data["run_id"] = run.run_id
            data["filtered_run"] = run.config.get("filtered_run")
            return data
    return None
