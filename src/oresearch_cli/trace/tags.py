"""The O-Researcher tag vocabulary: names, the lenient tag pattern, and what the agent loop needs.

Everything else in the project gets these through `oresearch_cli.trace`; nobody else spells a tag.
"""

from __future__ import annotations

import re

SUBTASK_LIST = "subtask_list"
SUBTASK = "subtask"
THINK = "think"
PLAN = "plan"
WEB_SEARCH = "web_search"
CRAWL_PAGE = "crawl_page"
OBSERVATION = "observation"
SUBTASK_ANSWER = "subtask_answer"
SUGGESTED_ANSWER = "suggested_answer"

TAGS = (
    SUBTASK_LIST,
    SUBTASK,
    THINK,
    PLAN,
    WEB_SEARCH,
    CRAWL_PAGE,
    OBSERVATION,
    SUBTASK_ANSWER,
    SUGGESTED_ANSWER,
)
TOOL_TAGS = (WEB_SEARCH, CRAWL_PAGE)

# Generation stops after a tool call or the report; the environment then appends an observation.
STOP_STRINGS = (f"</{WEB_SEARCH}>", f"</{CRAWL_PAGE}>", f"</{SUGGESTED_ANSWER}>")

DEFAULT_SERP_NUM = 10

# `subtask_list`, `Subtask-List`, `subtask list` and `subtasklist` all name one tag: real output varies.
_NAME = {tag: r"[ _-]?".join(re.escape(part) for part in tag.split("_")) for tag in TAGS}
# Longer names first so `subtask` never wins over `subtask_list`.
_ALTERNATION = "|".join(f"(?P<{tag}>{_NAME[tag]})" for tag in sorted(TAGS, key=len, reverse=True))
# Bounded whitespace: `< think >` is a tag, and a long run of spaces after `<` costs no backtracking.
TAG_RE = re.compile(rf"<\s{{0,8}}(?P<close>/)?\s{{0,8}}(?:{_ALTERNATION})\s{{0,8}}>", re.IGNORECASE)
# The same pattern without groups, so the same matches, found about twice as fast: the parser
# scans with it and asks `TAG_RE` for the groups only where a match is not a canonical spelling.
TAG_SCAN_RE = re.compile(
    rf"<\s{{0,8}}/?\s{{0,8}}(?:{'|'.join(_NAME[tag] for tag in sorted(TAGS, key=len, reverse=True))})\s{{0,8}}>",
    re.IGNORECASE,
)


def open_tag(tag: str) -> str:
    return f"<{tag}>"


def close_tag(tag: str) -> str:
    return f"</{tag}>"


def observation_block(text: str) -> str:
    """What the environment appends after a tool call: exactly the untrainable span in a rendered trace.

    The leading newline belongs to the environment too, so the model's turn ends at the closing
    tool tag (where generation stops) and its next turn starts with the newline before `<think>`.
    """
    return f"\n{open_tag(OBSERVATION)}\n{text}\n{close_tag(OBSERVATION)}"


def escape_tags(text: str) -> str:
    """Tool output with every tag spelling the parser accepts defused (`<think>` -> `&lt;think&gt;`),
    so a crawled page can neither close its observation nor fake a step."""
    return TAG_RE.sub(lambda m: "&lt;" + m.group(0)[1:-1] + "&gt;", text)


def contains_tag(text: str) -> bool:
    return TAG_SCAN_RE.search(text) is not None
