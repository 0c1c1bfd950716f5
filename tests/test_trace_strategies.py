"""Hypothesis strategies for traces, shared by the trace tests (and a check that they hold)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from oresearch_cli.trace import (
    CrawlPage,
    Observation,
    Plan,
    Report,
    Subtask,
    SubtaskAnswer,
    SubtaskList,
    Text,
    Think,
    Trace,
    WebSearch,
)
from oresearch_cli.trace.tags import TAGS, contains_tag

# Free text: any characters (CJK, emoji, `<`, `&`...) except that it never spells a trace tag.
_CHARS = st.characters(exclude_categories=("Cs",))
free_text = st.text(_CHARS, max_size=60).map(str.strip).filter(lambda s: not contains_tag(s))
nonempty_text = free_text.filter(bool)
# Prose that uses the tag names and angle brackets without being tags.
tricky_text = st.sampled_from(
    ["<b>bold</b>", "a < b > c", "use think and plan", "<thinking>", "</ subtask_x>", "x&serp_num"]
)
texts = st.one_of(free_text, tricky_text)

# Queries and URLs as a model writes them in canonical form: no separators, prefixes or quotes.
_QUERY_CHARS = st.characters(exclude_categories=("Cs",), exclude_characters="|&<>{}=:\"'“”‘’「」『』\n")
queries = st.text(_QUERY_CHARS, min_size=1, max_size=30).map(str.strip).filter(bool)
urls = st.builds(
    lambda host, path: f"https://{host}.example.org/{path}",
    st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=10),
    st.text("abcdefghijklmnopqrstuvwxyz0123456789/._-?=%#", max_size=20),
)

steps_no_text = st.one_of(
    st.builds(Think, texts),
    st.builds(Plan, texts),
    st.builds(WebSearch, st.lists(queries, min_size=1, max_size=4).map(tuple), st.integers(0, 10**6)),
    st.builds(CrawlPage, st.lists(urls, min_size=1, max_size=3).map(tuple)),
    st.builds(Observation, texts),
    st.builds(SubtaskAnswer, texts),
    st.builds(SubtaskList, texts),
)


@st.composite
def step_lists(draw: st.DrawFn, max_size: int = 8) -> list:
    """Steps with stray text mixed in, never two texts in a row (they would read back as one)."""
    result: list = []
    for _ in range(draw(st.integers(0, max_size))):
        if draw(st.integers(0, 4)) == 0 and not (result and isinstance(result[-1], Text)):
            result.append(Text(draw(nonempty_text)))
        else:
            result.append(draw(steps_no_text))
    return result


@st.composite
def traces(draw: st.DrawFn) -> Trace:
    preamble = draw(step_lists(4))
    subtasks = [Subtask(draw(texts), draw(step_lists())) for _ in range(draw(st.integers(0, 3)))]
    report = draw(st.one_of(st.none(), st.builds(Report, texts)))
    trailer = draw(step_lists(2)) if report is not None else []
    superseded = draw(st.lists(st.builds(Report, texts), max_size=1)) if report is not None else []
    return Trace(
        preamble=preamble, subtasks=subtasks, report=report, trailer=trailer, superseded_reports=superseded
    )


# Tag soup: fragments of real and broken trace text in any order, for the never-raises properties.
_TAG_FORMS = (
    [f"<{t}>" for t in TAGS] + [f"</{t}>" for t in TAGS] + ["< Think >", "</SUBTASK-ANSWER>", "<web search>"]
)
soup = st.lists(
    st.one_of(
        st.sampled_from(_TAG_FORMS),
        free_text,
        st.sampled_from(
            [
                "query=a | b | c&num=10",
                "a|b&serp_num=3",
                "https://x.org | https://y.org",
                "\n\n",
                "[1]",
                '{"query": "q"}',
            ]
        ),
    ),
    max_size=30,
).map("".join)


@given(traces())
def test_strategy_builds_traces(trace: Trace) -> None:
    assert all(
        not (isinstance(a, Text) and isinstance(b, Text))
        for a, b in zip(trace.preamble, trace.preamble[1:], strict=False)
    )
