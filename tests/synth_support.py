"""Test support for agent and synth tests: a tiny corpus and a scripted teacher for the stand-in.

The teacher answers each role the way a competent model would, detected from the request: the
`model` field names the role (`planner-m`, `worker-m`, `summarizer-m`), and a worker request whose
system prompt asks for an `"action"` is a step, otherwise the answer. Steps search first, then read
the first source, until `calls` tool calls are made, then answer. `faults` maps a piece
(`planner`, `step`, `answer`, `report`) to a list of replies to send first for that piece.
"""

from __future__ import annotations

import json
import re
import threading
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from oresearch_cli.llm import load_config
from oresearch_cli.tools.corpus import build_corpus
from oresearch_cli.workspace import Workspace

from standin_llm import Received, Reply, error, ok

TOPICS = [
    ("photosynthesis", "Photosynthesis", "Photosynthesis converts light energy into chemical energy in chloroplasts."),
    ("calvin", "Calvin cycle", "The Calvin cycle fixes carbon dioxide in the stroma using ATP and NADPH."),
    ("thylakoid", "Thylakoid", "Thylakoids are membranes inside chloroplasts where light reactions occur."),
    ("chlorophyll", "Chlorophyll", "Chlorophyll is the green pigment that absorbs light for photosynthesis."),
    ("rubisco", "RuBisCO", "RuBisCO is the enzyme that fixes carbon dioxide in the Calvin cycle."),
    ("amazon", "Amazon River", "The Amazon River carries the largest discharge of water of any river."),
    ("nile", "Nile", "The Nile is a major river in northeastern Africa flowing into the Mediterranean."),
    ("volcano", "Volcano", "A volcano is a rupture in the crust where lava, ash and gases escape."),
]  # fmt: skip
MODELS = {"planner": "planner-m", "worker": "worker-m", "summarizer": "summarizer-m"}


def build_test_corpus(ws: Workspace, tmp: Path, name: str = "mini") -> str:
    path = tmp / f"{name}.jsonl"
    path.write_text(
        "".join(
            json.dumps(
                {
                    "id": i,
                    "title": t,
                    "url": f"https://en.wikipedia.org/wiki/{t.replace(' ', '_')}",
                    "text": f"{x} " + " ".join([x] * 3),
                }
            )
            + "\n"
            for i, t, x in TOPICS
        )  # fmt: skip
    )
    build_corpus(ws, path, name)
    return name


def llm_config(url: str, **overrides: Any):  # type: ignore[no-untyped-def]
    values: dict[str, Any] = {
        "base_url": url,
        "planner.model": MODELS["planner"],
        "worker.model": MODELS["worker"],
        "summarizer.model": MODELS["summarizer"],
        "max_attempts": 4,
        "backoff_base_s": 0.01,
        "backoff_max_s": 0.05,
        "timeout_s": 5,
        "api_key_env": None,
    }
    values.update(overrides)
    return load_config(overrides=values, environ={})


def piece_of(request: Received) -> str:
    body = request.json()
    model = body.get("model", "")
    system = next((m["content"] for m in body["messages"] if m["role"] == "system"), "")
    if model == MODELS["planner"]:
        return "planner"
    if model == MODELS["summarizer"]:
        return "report"
    return "step" if '"action"' in system else "answer"


class Teacher:
    """A scripted teacher: callable as the stand-in's `script`."""

    def __init__(
        self,
        subtasks: int = 2,
        calls: int = 2,
        faults: dict[str, list[Reply]] | None = None,
        latency: float = 0.0,
        answer_too_early: bool = False,
    ) -> None:
        self.subtasks = subtasks
        self.calls = calls
        self.faults = {k: list(v) for k, v in (faults or {}).items()}
        self.latency = latency
        self.answer_too_early = answer_too_early
        self.lock = threading.Lock()
        self.log: list[tuple[str, str, float]] = []  # (piece, subtask, arrival time)
        self.counts: dict[str, int] = defaultdict(int)

    def __call__(self, request: Received) -> Reply:
        piece = piece_of(request)
        user = request.last_user_text()
        subtask = _find(r"(?:Your subtask|Subtask|你的子任务|子任务)[:：]\s*(.+)", user)
        with self.lock:
            self.counts[piece] += 1
            self.log.append((piece, subtask, request.at))
            queue = self.faults.get(piece)
            if queue:
                reply = queue.pop(0)
                return reply
        text = getattr(self, f"_{piece}")(user, subtask)
        return ok(text, delay=self.latency)

    def _planner(self, user: str, subtask: str) -> str:
        question = _find(r"(?:Research question|研究问题)[:：]\s*(.+)", user)
        topics = [t for _, t, _ in TOPICS]
        picked = [
            f"What is {topics[(len(question) + i) % len(topics)]} ({question[:30]})?"
            for i in range(self.subtasks)
        ]
        return json.dumps({"subtasks": picked})

    def _step(self, user: str, subtask: str) -> str:
        calls = int(_find(r"(?:Tool calls made so far|已调用工具)\D*(\d+)", user) or 0)
        sources = re.findall(r"^\[(\d+)\] .* - (https?://\S+)$", user, re.MULTILINE)
        more = "fewer than" in user or "少于" in user
        if calls >= self.calls or (self.answer_too_early and not more):
            return json.dumps({"thought": "The sources are enough to answer.", "action": "answer"})
        if calls % 2 == 1 and sources:
            return json.dumps({"thought": "The first result looks relevant; read it.", "action": "crawl",
                               "urls": [sources[0][1]]})  # fmt: skip
        topic = re.sub(r"[^\w ]", " ", subtask).split()
        return json.dumps(
            {"thought": f"I need facts about {subtask[:40]}.", "plan": "1. Search. 2. Read. 3. Answer.",
             "action": "search", "queries": [" ".join(topic[2:5]) or "photosynthesis", "chloroplast light"]}
        )  # fmt: skip

    def _answer(self, user: str, subtask: str) -> str:
        return f"The sources describe {subtask[:40]} clearly [1]. They also add detail [2][99]."

    def _report(self, user: str, subtask: str) -> str:
        return (
            "## Introduction\nThis report answers the question [1].\n\n"
            "## Findings\nThe evidence is consistent [2]. Some claims cite nothing real [77].\n\n"
            "## Conclusion\nIn short, the sources agree [1][3].\n\n"
            "## References\n[1]. https://made.up/url - Invented\n[2]. https://other.example - X\n"
        )


def _find(pattern: str, text: str) -> str:
    m = re.search(pattern, text)
    return m.group(1).strip() if m else ""


# -- synth stage helpers -----------------------------------------------------------------------------

# Distinct enough that `ores seed` keeps them all (no near-duplicates) and that the Teacher's
# subtasks, which quote a question's first 30 characters, tell the questions apart.
_SUBJECTS = ["photosynthesis", "the Calvin cycle", "thylakoid membranes", "chlorophyll pigments",
             "the enzyme RuBisCO", "the Amazon River", "the Nile delta", "volcanic eruptions"]  # fmt: skip
_ANGLES = ["change over the decades", "compare across climates", "matter for farming", "get measured in labs",
           "shape local economies", "appear in school curricula", "respond to drought years"]  # fmt: skip


def seed_questions(n: int) -> list[dict[str, str]]:
    """`n` seed records (id, question, language): the language is given so no run loads langid."""
    seeds = []
    for i in range(n):
        subject = _SUBJECTS[i % len(_SUBJECTS)]
        angle = _ANGLES[(i // len(_SUBJECTS) + i) % len(_ANGLES)]
        seeds.append(
            {"id": f"q{i:02d}", "question": f"Q{i:02d}: how do {subject} {angle}?", "language": "en"}
        )
    return seeds


def write_seeds(path: Path, n: int) -> list[dict[str, str]]:
    seeds = seed_questions(n)
    path.write_text("".join(json.dumps(s) + "\n" for s in seeds), encoding="utf-8")
    return seeds


def synth_cli_args(url: str, *extra: str, corpus: str = "mini") -> list[str]:
    """The `ores synth` flags that point every role at the stand-in's Teacher and the test corpus."""
    return [
        "--search", f"local:{corpus}", "--crawl", "local",
        "--planner-model", MODELS["planner"], "--worker-model", MODELS["worker"],
        "--summarizer-model", MODELS["summarizer"], "--base-url", url, *extra,
    ]  # fmt: skip


def write_priced_config(path: Path, input_usd: float = 1.0, output_usd: float = 2.0, **llm: Any) -> Path:
    """A `--config` YAML pricing the Teacher's models (USD per 1M tokens), plus `llm` settings."""
    import yaml

    prices = {model: {"input": input_usd, "output": output_usd} for model in MODELS.values()}
    path.write_text(yaml.safe_dump({"llm": {"prices": prices, **llm}}), encoding="utf-8")
    return path


def planner_question(request: Received) -> str | None:
    """The research question of a planner request, else None."""
    if piece_of(request) != "planner":
        return None
    return _find(r"(?:Research question|研究问题)[:：]\s*(.+)", request.last_user_text())


def refusing_planner(refused: set[str]) -> Callable[[Received], Reply]:
    """A Teacher whose endpoint refuses (HTTP 400, as a too-long prompt) the planner call of every
    question in `refused`: the set is read at each call, so a test adds to or clears it mid-run."""
    teacher = Teacher()

    def script(request: Received) -> Reply:
        if planner_question(request) in refused:
            return error(400, "prompt is too long for this model")
        return teacher(request)

    return script
