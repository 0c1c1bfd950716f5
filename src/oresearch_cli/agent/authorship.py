"""Who wrote each piece of a trace: the model, or an orchestrator fallback.

Every piece a role is asked for may be unusable twice and then be written by the orchestrator
instead (`Context.ask` records the two failed replies, the role records the fallback as a
`Failure` with `fallback` set). Counted from the structured steps log that synth stores (its
`steps` column; `StepRecord.to_log` entries), one piece per record:

    piece          role        record kind        written by a fallback when
    subtask_list   planner     subtask_list       "subtasks from the question"
    step           worker      think              the orchestrator chose the tool call
                               step_failed        no usable step once the minimum was met
    plan           worker      plan               "generic plan" (the first step had none)
    answer         worker      subtask_answer     "answer built from the observed snippets"
    report         summarizer  report             "report assembled from the subtask answers"

A record is orchestrator-written when any of its failures has `fallback` set; failures without
one (a reply retried into a usable one, a `min_tool_calls` bound) leave it the model's. Tool
calls and observations are not pieces: the queries and URLs belong to their step, the
observations to the tools. A `step_failed` record counts: the model was asked for a step and the
orchestrator decided in its place (to answer with the sources so far).

    authorship = authorship_of(row["steps"])       # None: no steps log (e.g. an imported trace)
    authorship.model_share                         # 0.85: 85% of the pieces are the model's
    total_authorship(authorship_of(r["steps"]) for r in rows).to_dict()
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from oresearch_cli.agent.steps import StepRecord

__all__ = ["PIECES", "Authorship", "PieceCount", "StepsLog", "authorship_of", "total_authorship"]

# The kinds of piece, in the order a trace has them.
PIECES: tuple[str, ...] = ("subtask_list", "step", "plan", "answer", "report")
# The record kind (a `StepRecord.kind`) -> the piece it is; other kinds are not pieces.
_PIECE_OF_KIND = {
    "subtask_list": "subtask_list",
    "think": "step",
    "step_failed": "step",
    "plan": "plan",
    "subtask_answer": "answer",
    "report": "report",
}


@dataclass(frozen=True)
class PieceCount:
    """Pieces of one kind: how many the model wrote, how many a fallback wrote."""

    model: int = 0
    fallback: int = 0

    @property
    def total(self) -> int:
        return self.model + self.fallback

    def __add__(self, other: PieceCount) -> PieceCount:
        return PieceCount(self.model + other.model, self.fallback + other.fallback)

    def to_dict(self) -> dict[str, int]:
        return {"model": self.model, "fallback": self.fallback}


def _zero() -> dict[str, PieceCount]:
    return {piece: PieceCount() for piece in PIECES}


@dataclass(frozen=True)
class Authorship:
    """Who wrote the pieces of one trace, or (summed with `+` or `total_authorship`) of many.
    `pieces` has every kind of `PIECES`, in that order; `traces` counts the traces whose steps
    log was read and `unrecorded` those without one (in a sum; they add no pieces)."""

    pieces: dict[str, PieceCount] = field(default_factory=_zero)
    traces: int = 1
    unrecorded: int = 0

    @property
    def model_written(self) -> int:
        return sum(c.model for c in self.pieces.values())

    @property
    def fallback_written(self) -> int:
        return sum(c.fallback for c in self.pieces.values())

    @property
    def total(self) -> int:
        return self.model_written + self.fallback_written

    @property
    def model_share(self) -> float | None:
        """The share of pieces the model wrote, in [0, 1]; None when there is no piece."""
        return self.model_written / self.total if self.total else None

    @property
    def fallback_share(self) -> float | None:
        """The share of pieces a fallback wrote (computed as such, not as 1 - model_share, so a
        threshold compares exactly: 3 of 10 is 0.3)."""
        return self.fallback_written / self.total if self.total else None

    def __add__(self, other: Authorship) -> Authorship:
        none = PieceCount()
        pieces = {p: self.pieces.get(p, none) + other.pieces.get(p, none) for p in PIECES}
        return Authorship(pieces, self.traces + other.traces, self.unrecorded + other.unrecorded)

    def to_dict(self) -> dict[str, Any]:
        share = self.model_share
        return {
            "model_written": self.model_written,
            "fallback_written": self.fallback_written,
            "model_share": None if share is None else round(share, 4),
            "pieces": {piece: count.to_dict() for piece, count in self.pieces.items()},
            "traces": self.traces,
            "unrecorded": self.unrecorded,
        }


def _entries(log: Any) -> Iterable[Any]:
    """The step entries of a steps log: synth's mapping (`subtask_list`, each subtask's `steps`,
    `report`) or a plain sequence of entries. Anything else holds none."""
    if isinstance(log, Mapping):
        yield log.get("subtask_list")
        subtasks = log.get("subtasks")
        for subtask in subtasks if isinstance(subtasks, list) else ():
            steps = subtask.get("steps") if isinstance(subtask, Mapping) else None
            yield from steps if isinstance(steps, list) else ()
        yield log.get("report")
    elif isinstance(log, Sequence) and not isinstance(log, str | bytes):
        yield from log


StepsLog = str | bytes | Mapping[str, Any] | Sequence[Mapping[str, Any]] | Sequence["StepRecord"] | None


def authorship_of(steps: StepsLog) -> Authorship | None:
    """Who wrote the pieces of one trace, from its steps log as synth stores it (JSON text or the
    parsed mapping), or from a sequence of step entries (`StepRecord.to_log()` dicts, or the
    records themselves). None when there is no log or it records no piece (a trace imported
    from a file, a failed seed's `{}`). Never raises: an unreadable log is no log."""
    log: Any = steps
    if isinstance(log, str | bytes):
        try:
            log = json.loads(log) if log.strip() else None
        except ValueError:
            return None
    counts = _zero()
    for entry in _entries(log):
        if hasattr(entry, "to_log"):
            entry = entry.to_log()
        if not isinstance(entry, Mapping):
            continue
        piece = _PIECE_OF_KIND.get(str(entry.get("kind")))
        if piece is None:
            continue
        failures = entry.get("failures")
        fallback = isinstance(failures, list) and any(
            isinstance(f, Mapping) and f.get("fallback") for f in failures
        )
        counts[piece] += PieceCount(0, 1) if fallback else PieceCount(1, 0)
    authorship = Authorship(counts)
    return authorship if authorship.total else None


def total_authorship(authorships: Iterable[Authorship | None]) -> Authorship:
    """The sum over traces; a None (no steps log) counts in `unrecorded` only."""
    total = Authorship(traces=0)
    for authorship in authorships:
        total = total + (authorship if authorship is not None else Authorship(traces=0, unrecorded=1))
    return total
