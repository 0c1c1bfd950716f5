"""The agent's prompt texts, one folder per language under `oresearch_cli/prompts/agent/`.

Each piece has a file (`planner.txt`, `step.txt`, `answer.txt`, `report.txt`, `strict.txt`): a
system prompt, a line `---`, and the user message; `$name` placeholders are filled with
`string.Template`. `phrases.txt` holds the short texts the orchestrator writes itself (fallback
thoughts, report headings, labels), as `key: value` lines. A language without a folder uses `en`.
`PROMPTS_VERSION` hashes every file, so changing a prompt changes synth's config hash.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from importlib.abc import Traversable

import hashlib
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from string import Template

PACKAGE = "oresearch_cli"
FOLDER = "prompts/agent"
DEFAULT_LANGUAGE = "en"
PIECES = ("planner", "step", "answer", "report", "strict")
PLACEHOLDER = re.compile(r"<[^<>\n]{2,80}>")
SCHEMAS = "schemas"  # the pieces' JSON schemas (agent/schemas.py), beside the language folders


def _root() -> Traversable:
    return resources.files(PACKAGE).joinpath(FOLDER)


@cache
def languages() -> tuple[str, ...]:
    return tuple(
        sorted(
            p.name
            for p in _root().iterdir()
            if p.is_dir() and p.name != SCHEMAS and not p.name.startswith("_")
        )
    )


def prompt_language(language: str | None) -> str:
    """The prompt folder for a question's language (`zh-cn` -> `zh`; unknown -> `en`)."""
    code = (language or "").lower().replace("_", "-").split("-")[0]
    return code if code in languages() else DEFAULT_LANGUAGE


@cache
def _read(language: str, name: str) -> str:
    return _root().joinpath(language, name).read_text(encoding="utf-8")


@dataclass(frozen=True)
class Prompt:
    system: str
    user: str

    @property
    def placeholders(self) -> tuple[str, ...]:
        """The `<...>` descriptions the prompt shows in place of values: text for the model to
        replace, never to copy (a reply holding one is unusable)."""
        return tuple(dict.fromkeys(PLACEHOLDER.findall(f"{self.system}\n{self.user}")))

    def messages(self, **values: object) -> list[dict[str, str]]:
        text = {k: str(v) for k, v in values.items()}
        return [
            {"role": "system", "content": Template(self.system).safe_substitute(text).strip()},
            {"role": "user", "content": Template(self.user).safe_substitute(text).strip()},
        ]


@cache
def prompt(name: str, language: str = DEFAULT_LANGUAGE) -> Prompt:
    """The prompt `name` (one of PIECES) in `language` (a prompt folder name)."""
    raw = _read(prompt_language(language), f"{name}.txt")
    system, sep, user = raw.partition("\n---\n")
    if not sep:
        system, user = "", raw
    return Prompt(system.strip(), user.strip())


@cache
def phrases(language: str = DEFAULT_LANGUAGE) -> dict[str, str]:
    """The `key: value` phrases of `language`, English ones filling any gap."""
    found: dict[str, str] = {}
    for lang in dict.fromkeys((DEFAULT_LANGUAGE, prompt_language(language))):
        for line in _read(lang, "phrases.txt").splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            key, sep, value = line.partition(":")
            if sep:
                found[key.strip()] = value.strip().replace("\\n", "\n") + (" " if value.endswith(" ") else "")
    return found


def phrase(language: str, key: str, **values: object) -> str:
    return Template(phrases(language)[key]).safe_substitute({k: str(v) for k, v in values.items()})


@cache
def prompts_version() -> str:
    """A hash of every prompt and schema file: part of synth's config, so an edited prompt is a new config."""
    digest = hashlib.sha256()
    for lang in (*languages(), SCHEMAS):
        for path in sorted(_root().joinpath(lang).iterdir(), key=lambda p: p.name):
            if path.name.endswith((".txt", ".json")):
                digest.update(f"{lang}/{path.name}\0".encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()[:12]
