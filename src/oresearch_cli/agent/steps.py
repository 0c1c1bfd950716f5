"""One record per workflow step: the trace step and the structured log entry both come from it.

A worker keeps one `StepRecord` per step it takes; `to_trace_step()` gives the step the trace
renders and `to_log()` the entry of the `steps` JSON column synth stores (read by tools and
tests, so its shape is fixed: `kind`, `content`, `failures`, then the kind's extras). Rewriting a
record (an answer's citations renumbered into the merged source list) rewrites both at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from oresearch_cli.agent.context import Failure
from oresearch_cli.trace import (
    CrawlPage,
    Observation,
    Plan,
    Step,
    SubtaskAnswer,
    SubtaskList,
    Think,
    WebSearch,
    tags,
)

OBS_LOG_CHARS = 1000  # of an observation, in the log (the trace has it whole)
STEP_FAILED = "step_failed"  # a step with no usable reply once the minimum was met: log only
REPORT = "report"  # the summarizer's record: log only (the report has its own column)


@dataclass
class StepRecord:
    """One step: `kind` is a trace tag name, `step_failed` or `report`; `content` is the step's
    text, its queries (web_search), URLs (crawl_page) or subtasks (subtask_list), else None."""

    kind: str
    content: Any = None
    failures: list[Failure] = field(default_factory=list)
    count: int | None = None  # web_search: results asked for
    errors: list[str] = field(default_factory=list)  # observation: what the tool reported
    forced: str | None = None  # subtask_answer: the bound that ended the loop

    def to_trace_step(self) -> Step | None:
        """The step as the trace has it; None for a record that only the log keeps."""
        kind, content = self.kind, self.content
        if kind == tags.THINK:
            return Think(content)
        if kind == tags.PLAN:
            return Plan(content)
        if kind == tags.WEB_SEARCH:
            return WebSearch(tuple(content), self.count if self.count is not None else tags.DEFAULT_SERP_NUM)
        if kind == tags.CRAWL_PAGE:
            return CrawlPage(tuple(content))
        if kind == tags.OBSERVATION:
            return Observation(content)
        if kind == tags.SUBTASK_ANSWER:
            return SubtaskAnswer(content)
        if kind == tags.SUBTASK_LIST:
            return SubtaskList("\n".join(f"{i}. {s}" for i, s in enumerate(content, start=1)))
        return None

    def to_log(self) -> dict[str, Any]:
        """The entry of the structured `steps` log (an observation cut to `OBS_LOG_CHARS`)."""
        content = list(self.content) if isinstance(self.content, list | tuple) else self.content
        extra: dict[str, Any] = {}
        if self.kind == tags.WEB_SEARCH:
            extra["count"] = self.count
        elif self.kind == tags.OBSERVATION:
            content = self.content[:OBS_LOG_CHARS]
            extra = {"chars": len(self.content), "errors": list(self.errors) or None}
        elif self.kind == tags.SUBTASK_ANSWER:
            extra["forced"] = self.forced
        entry = {"kind": self.kind, "content": content, "failures": [f.to_dict() for f in self.failures]}
        entry.update({k: v for k, v in extra.items() if v is not None})
        return entry
