"""The single-model protocol: the system prompt that teaches one model to write a whole trace.

One file per language under `oresearch_cli/prompts/single/`. `ores sft` trains on (this prompt +
the question) -> `render(trace)`; `ores rl`, `ores eval run --model`, the agent server and
`ores serve --model <sft run>` prompt with the same text, so the model sees at inference exactly
what it was trained on. `protocol_version()` hashes the files: part of sft's config hash.
"""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import resources

from oresearch_cli.agent.prompts import DEFAULT_LANGUAGE, PACKAGE

FOLDER = "prompts/single"
DEFAULT_SYSTEM_MARK = "{#- ores: the single-model protocol's system prompt by default -#}"


@cache
def protocol_languages() -> tuple[str, ...]:
    root = resources.files(PACKAGE).joinpath(FOLDER)
    return tuple(sorted(p.name.removesuffix(".txt") for p in root.iterdir() if p.name.endswith(".txt")))


def protocol_language(language: str | None) -> str:
    """The prompt file for a question's language (`zh-cn` -> `zh`; unknown or none -> `en`)."""
    code = (language or "").lower().replace("_", "-").split("-")[0]
    return code if code in protocol_languages() else DEFAULT_LANGUAGE


@cache
def system_prompt(language: str | None = DEFAULT_LANGUAGE) -> str:
    """The system message of the single-model protocol in `language`."""
    path = resources.files(PACKAGE).joinpath(FOLDER, f"{protocol_language(language)}.txt")
    return path.read_text(encoding="utf-8").strip()


def messages(question: str, language: str | None = DEFAULT_LANGUAGE) -> list[dict[str, str]]:
    """The prompt of one research episode: the system message and the question."""
    return [{"role": "system", "content": system_prompt(language)}, {"role": "user", "content": question}]


@cache
def protocol_version() -> str:
    digest = hashlib.sha256()
    for language in protocol_languages():
        digest.update(f"{language}\0{system_prompt(language)}\0".encode())
    return digest.hexdigest()[:12]


def with_default_system_prompt(chat_template: str, language: str | None = DEFAULT_LANGUAGE) -> str:
    """`chat_template` that puts the protocol's system prompt first when a request has no system
    message. Saved into a trained model's tokenizer, so every server that applies the model's
    template (ours, vLLM, transformers) prompts it the way it was trained, even for a client that
    sends only the question. A request with its own system message is left as it is."""
    if DEFAULT_SYSTEM_MARK in chat_template:
        return chat_template  # a model trained from an ores model: its template has it already
    prompt = system_prompt(language).replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n")
    header = (
        DEFAULT_SYSTEM_MARK + "{%- if messages and messages[0]['role'] != 'system' -%}"
        f"{{%- set messages = [{{'role': 'system', 'content': '{prompt}'}}] + messages -%}}"
        "{%- endif -%}"
    )
    return header + chat_template
