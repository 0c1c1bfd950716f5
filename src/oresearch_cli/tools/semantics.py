"""O-Researcher's tool semantics, independent of any backend.

`web_search` takes several queries separated by `|` and a result count (`serp_num`/`num`, default
10, capped at 20). The count is split over the queries, results are de-duplicated by URL across
queries (the first query to find a URL keeps it), and the observation is one markdown text:

    ## Query: 'first query'
    1. [Title](https://url)
    snippet on one line
    ## Query: 'second query'
    3. [Title](https://url)
    ...

Entries are numbered across the whole observation, so the agent can cite them unambiguously.
`crawl_page` takes several URLs separated by `|` and shows each page's main text, cut to a budget.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote

from oresearch_cli.textutil.urls import page_key
from oresearch_cli.tools.base import Page, QueryResult, SearchHit
from oresearch_cli.trace import escape_tags, parse_search, parse_urls

DEFAULT_NUM = 10
MAX_NUM = 20
# Extra results asked of the backend per query so that de-duplication can still fill each share.
DEDUP_SLACK = 3
DEFAULT_CRAWL_CHARS = 8000

_WS = re.compile(r"\s+")


@dataclass(frozen=True)
class SearchRequest:
    queries: list[str]
    num: int


def clamp_num(num: int | str | None, default: int = DEFAULT_NUM, cap: int = MAX_NUM) -> int:
    """The result count asked for, as an int in [1, cap]; unreadable values give the default."""
    if num is None or num == "":
        return min(default, cap)
    try:
        value = int(str(num).strip())
    except ValueError:
        return min(default, cap)
    return max(1, min(value, cap))


def split_queries(text: str | Sequence[str]) -> list[str]:
    """Queries from `a | b | c` (or a list), stripped, blanks and exact repeats dropped."""
    parts = text.split("|") if isinstance(text, str) else [p for item in text for p in str(item).split("|")]
    seen: set[str] = set()
    queries: list[str] = []
    for part in parts:
        query = _WS.sub(" ", part).strip()
        if query and query.casefold() not in seen:
            seen.add(query.casefold())
            queries.append(query)
    return queries


def parse_search_argument(text: str, default_num: int = DEFAULT_NUM, cap: int = MAX_NUM) -> SearchRequest:
    """What the model wrote inside `<web_search>` (`q1 | q2&serp_num=10`, `query=q1|q2&num=10`),
    read by the trace grammar, with repeated queries dropped and the count clamped to [1, cap]."""
    queries, num = parse_search(text, default_count=default_num)
    return SearchRequest(queries=split_queries(list(queries)), num=clamp_num(num, default_num, cap))


def parse_crawl_argument(text: str | Sequence[str]) -> list[str]:
    """URLs from `<crawl_page>u1 | u2</crawl_page>` (or a list of such), read by the trace grammar,
    repeats dropped."""
    items = [text] if isinstance(text, str) else [str(t) for t in text]
    urls: list[str] = []
    for item in items:
        for url in parse_urls(item):
            if url not in urls:
                urls.append(url)
    return urls


def split_count(num: int, n_queries: int) -> list[int]:
    """Share `num` results over `n_queries` as evenly as possible, earlier queries first, at
    least one each (as O-Researcher does: a query never gets zero results)."""
    if n_queries <= 0:
        return []
    base, extra = divmod(num, n_queries)
    return [max(1, base + (1 if i < extra else 0)) for i in range(n_queries)]


def fetch_count(share: int, n_queries: int = 2, cap: int = MAX_NUM) -> int:
    """How many results to ask the backend for, to fill `share` after de-duplication across
    queries (a single query needs no slack: its results are distinct already)."""
    return share if n_queries <= 1 else min(cap, share + DEDUP_SLACK)


def merge_results(
    queries: Sequence[str], hits_per_query: Sequence[list[SearchHit] | BaseException], shares: Sequence[int]
) -> list[QueryResult]:
    """De-duplicate by URL across queries (earlier queries keep a URL), keep `share` hits per
    query, then top up queries that came short from the spare hits of the others, as
    O-Researcher supplements results when de-duplication leaves fewer than asked for."""
    seen: set[str] = set()
    results: list[QueryResult] = []
    spares: list[list[SearchHit]] = []
    for query, hits, share in zip(queries, hits_per_query, shares, strict=True):
        if isinstance(hits, BaseException):
            results.append(QueryResult(query=query, error=str(hits) or type(hits).__name__))
            spares.append([])
            continue
        kept: list[SearchHit] = []
        spare: list[SearchHit] = []
        for hit in hits:
            key = page_key(hit.url) if hit.url else f"untitled:{hit.title}:{hit.snippet[:80]}"
            if key in seen:
                continue
            if len(kept) < share:
                seen.add(key)
                kept.append(hit)
            else:
                spare.append(hit)
        results.append(QueryResult(query=query, hits=kept))
        spares.append(spare)
    missing = sum(shares) - sum(len(r.hits) for r in results)
    for result, spare in zip(results, spares, strict=True):
        for hit in spare:
            if missing <= 0:
                break
            key = page_key(hit.url) if hit.url else f"untitled:{hit.title}:{hit.snippet[:80]}"
            if key not in seen:
                seen.add(key)
                result.hits.append(hit)
                missing -= 1
    return results


def one_line(text: str) -> str:
    return _WS.sub(" ", text).strip()


def neutralize_tags(text: str) -> str:
    """Escape trace tags inside tool output so a page cannot end the observation or fake a call.
    The trace grammar decides what counts as a tag, so every spelling its parser accepts is defused."""
    return escape_tags(text)


def _markdown_url(url: str) -> str:
    return quote(url, safe=":/?#[]@!$&'*+,;=%~-._") if any(c in url for c in " ()<>") else url


def render_search(results: Sequence[QueryResult]) -> str:
    """The `web_search` observation: a `## Query:` section per query, numbered entries across
    the whole observation, each `[title](url)` followed by its snippet on one line."""
    lines: list[str] = []
    n = 0
    for result in results:
        lines.append(f"## Query: '{one_line(result.query)}'")
        if result.error:
            lines.append(f"Search failed for this query: {one_line(result.error)}")
            continue
        if not result.hits:
            lines.append(f"No results found for '{one_line(result.query)}'. Try a more general query.")
            continue
        for hit in result.hits:
            n += 1
            title = one_line(hit.title) or hit.url
            lines.append(f"{n}. [{title}]({_markdown_url(hit.url)})")
            snippet = one_line(hit.snippet)
            if snippet:
                lines.append(snippet)
    return neutralize_tags("\n".join(lines))


# Where truncation prefers to cut, best first: (separators, characters of the separator kept).
_TRUNCATE_AT = (
    (("\n\n",), 0),
    (("\n",), 0),
    ((". ",), 1),
    (("。", "！", "？", "；"), 1),
    ((" ",), 0),
    (("，",), 1),
)


def truncate_text(text: str, max_chars: int) -> tuple[str, bool]:
    """Cut `text` to at most `max_chars`, at a paragraph, sentence or word end when one is near."""
    if max_chars <= 0 or len(text) <= max_chars:
        return text, False
    cut = text[:max_chars]
    # Chinese and Japanese end sentences with 。！？ and put no space after them (or anywhere).
    for seps, keep in _TRUNCATE_AT:
        at = max(cut.rfind(sep) for sep in seps)
        if at >= max_chars * 0.8:
            cut = cut[: at + keep]
            break
    return cut.rstrip(), True


def render_page(page: Page) -> str:
    """One page as the agent sees it: title line, then the (summary or) main text."""
    if page.error:
        error = one_line(page.error)
        error = error[len(page.url) + 2 :] if error.startswith(f"{page.url}: ") else error
        return f"Failed to crawl {page.url}: {error}"
    body = page.summary if page.summary is not None else page.text
    if page.truncated and page.summary is None:
        body += "\n[... truncated]"
    title = one_line(page.title)
    return f"{title}\n{body}" if title else body


def render_crawl(pages: Sequence[Page]) -> str:
    """The `crawl_page` observation: one page as is; several, each under `## Page N: url`."""
    if len(pages) == 1:
        return neutralize_tags(render_page(pages[0]))
    sections = [f"## Page {i}: {page.url}\n{render_page(page)}" for i, page in enumerate(pages, 1)]
    return neutralize_tags("\n\n".join(sections))
