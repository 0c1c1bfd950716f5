"""A scripted `Generator` for tests of the single-model research loop and what runs on it (`ores eval
run --model`, `ores serve --agent`): one token per character, so no tokenizer or torch is needed.

`CharModel` searches, reads the first result, then writes a cited report; a question holding QUIET
gets a turn with neither a call nor a report, one holding BROKEN a generator error. With `delay`,
each turn takes that long (an awaited sleep, so a cancelled turn is counted in `cancelled`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from oresearch_cli.agent.generators import ChatTokenizer, Generation, GeneratorError, _TokenizesLocally
from oresearch_cli.server.engine import SamplingParams
from oresearch_cli.tools.corpus import build_corpus
from oresearch_cli.workspace import Workspace

PHOTO_URL = "https://en.wikipedia.org/wiki/Photosynthesis"
DOCS = [
    {"id": "photo", "title": "Photosynthesis", "url": PHOTO_URL,
     "text": "Photosynthesis converts light energy into chemical energy stored in sugars, in chloroplasts."},
    {"id": "amazon", "title": "Amazon River", "url": "https://en.wikipedia.org/wiki/Amazon_River",
     "text": "The Amazon River carries the largest discharge of water of any river in the world."},
    {"id": "calvin", "title": "Calvin cycle", "url": "https://en.wikipedia.org/wiki/Calvin_cycle",
     "text": "The Calvin cycle fixes carbon dioxide in the stroma using ATP and NADPH."},
]  # fmt: skip
# The scripted model's behaviour per question: research then report, say nothing useful, or fail.
QUIET, BROKEN = "QUIET", "BROKEN"
SEEDS = [
    {"id": "q-photo", "question": "How do plants store light energy in photosynthesis?", "language": "en"},
    {"id": "q-quiet", "question": f"{QUIET}: which river carries the most water?", "language": "en"},
    {"id": "q-broken", "question": f"{BROKEN}: what does the Calvin cycle fix?", "language": "en"},
]
SEARCH_TURN = (
    "<subtask_list>\n1. What stores light energy?\n</subtask_list>\n\n<subtask>\nWhat stores light energy?\n"
    "</subtask>\n<think>\nI need an overview.\n</think>\n<plan>\n1. Search.\n</plan>\n"
    "<web_search>photosynthesis light energy&serp_num=2</web_search>\n<observation>\nmade up"
)
CRAWL_TURN = f"\n<think>\nThe first result is the overview; read it.\n</think>\n<crawl_page>{PHOTO_URL}</crawl_page>\n<think>"
REPORT_TURN = (
    "\n<subtask_answer>\nLight energy is stored as chemical energy in sugars [1].\n</subtask_answer>\n\n"
    "<suggested_answer>\n# Photosynthesis\n## Introduction\nPlants store light as chemical energy [1].\n\n"
    "## Body\nPhotosynthesis converts light energy into chemical energy in sugars [1].\n\n"
    f"## Conclusion\nLight becomes sugar [1].\n\n## References\n[1]. {PHOTO_URL} - Photosynthesis\n"
    "</suggested_answer>\n<|end|>"
)


class CharTokenizer:
    """A Hugging Face tokenizer's call shapes, one token per character (id = code point)."""

    chat_template = "<|role|>\\ncontent<|end|>\\n"

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        return {"input_ids": list(map(ord, text))}

    def decode(self, ids: Sequence[int], **_: Any) -> str:
        return "".join(map(chr, ids))

    def apply_chat_template(self, chat: list[dict[str, str]], add_generation_prompt: bool = False,
                            tokenize: bool = True, **_: Any) -> Any:  # fmt: skip
        text = "".join(f"<|{m['role']}|>\n{m['content']}<|end|>\n" for m in chat)
        text += "<|assistant|>\n" if add_generation_prompt else ""
        return self(text)["input_ids"] if tokenize else text


class CharModel(_TokenizesLocally):  # its prompt_ids/encode/decode: the char tokenizer's
    """A `Generator` that searches, reads the first result, then reports; a question holding QUIET gets a turn
    with neither a call nor a report, one holding BROKEN a generator error. Stops as an engine
    does: at the first stop string (left out of the text, its token kept), or at max_tokens."""

    name = "scripted-char"
    context_length = None

    def __init__(self, delay: float = 0.0) -> None:
        self.tokenizer = ChatTokenizer(CharTokenizer(), name="char")
        self.calls = 0
        self.questions: list[str] = []
        self.delay = delay
        self.in_flight = 0
        self.cancelled = 0

    async def aclose(self) -> None:
        return None

    async def generate(self, prompt_ids: Sequence[int], params: SamplingParams) -> Generation:
        self.calls += 1
        if self.delay:
            self.in_flight += 1
            try:
                await asyncio.sleep(self.delay)
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
            finally:
                self.in_flight -= 1
        context = self.decode(prompt_ids)
        if BROKEN in context:
            raise GeneratorError("generator scripted: the engine fell over; restart it")
        if QUIET in context:
            script = "I have nothing to add."
        else:
            written = context.rsplit("<|assistant|>\n", 1)[-1]  # the episode so far, after the prompt
            script = (SEARCH_TURN, CRAWL_TURN, REPORT_TURN)[min(2, written.count("<observation>"))]
        # One token per character: the first stop string completes at `end` characters (an engine
        # checks after each token), unless max_tokens comes first.
        ends = [script.find(stop) + len(stop) for stop in params.stop if stop in script]
        end = min(ends, default=len(script))
        if ends and end <= params.max_tokens:
            text = script[:end]
            at, stop = min((text.find(s), s) for s in params.stop if s in text)
            return self._done(text[:at], "stop", stop, text)
        if len(script) >= params.max_tokens:
            text = script[: params.max_tokens]
            return self._done(text, "length", None, text)
        return self._done(script, "stop", None, script)

    def _done(self, text: str, finish: str, stop: str | None, sampled: str) -> Generation:
        ids = tuple(self.encode(sampled))
        return Generation(text, finish, stop, ids, tuple(-0.1 for _ in ids))


def build_mini_corpus(ws: Workspace, folder: Path) -> None:
    """The "mini" corpus of `DOCS` in `ws`."""
    source = folder / "docs.jsonl"
    source.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    build_corpus(ws, source, "mini")
