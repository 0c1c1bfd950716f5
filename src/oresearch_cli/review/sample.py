"""A stratified sample of accepted traces: strata are (judge-score band, language).

Each stratum gets its share of `n` in proportion to its size (largest remainders), and at least
one trace while the budget allows, so small languages and low-score bands are always looked at.
The draw is deterministic for a given seed and set of ids.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from typing import Any


def band(score: float | None) -> str:
    """`none` without a judge score, else `<5`, `5-6`, ..., `9-10`."""
    if score is None:
        return "none"
    if score < 5:
        return "<5"
    low = min(int(score), 9)
    return f"{low}-{low + 1}"


def draw_sample(records: Sequence[dict[str, Any]], n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Up to `n` of `records` (accepted traces), stratified by band and language, in a stable order."""
    strata: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for record in sorted(records, key=lambda r: str(r["id"])):
        strata[(band(record.get("judge_overall")), str(record.get("language") or "und"))].append(record)
    total = sum(len(v) for v in strata.values())
    if n >= total:
        chosen = [r for key in sorted(strata) for r in strata[key]]
        return chosen
    keys = sorted(strata)
    quotas = {k: n * len(strata[k]) / total for k in keys}
    alloc = {k: int(quotas[k]) for k in keys}
    # At least one per stratum while there is budget, smallest strata first.
    for k in sorted(keys, key=lambda k: len(strata[k])):
        if alloc[k] == 0 and sum(alloc.values()) < n:
            alloc[k] = 1
    left = n - sum(alloc.values())
    for k in sorted(keys, key=lambda k: quotas[k] - int(quotas[k]), reverse=True):
        if left <= 0:
            break
        if alloc[k] < len(strata[k]):
            alloc[k] += 1
            left -= 1
    while sum(alloc.values()) > n:  # the one-per-stratum floor overshot: trim the largest
        k = max(keys, key=lambda k: alloc[k])
        alloc[k] -= 1
    rng = random.Random(seed)
    chosen = []
    for k in keys:
        chosen += rng.sample(strata[k], min(alloc[k], len(strata[k])))
    return chosen
