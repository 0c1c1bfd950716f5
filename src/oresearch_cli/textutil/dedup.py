"""Near-duplicate detection: MinHash LSH for candidates, exact Jaccard to confirm.

Character shingles work for Chinese (no spaces) and English alike. Confirming each LSH candidate
with the exact Jaccard keeps false positives out at the cost of a set intersection per pair.
"""

from __future__ import annotations

from collections.abc import Sequence

from oresearch_cli.textutil.normalize import dedup_key

SHINGLE = 5
NUM_PERM = 128


def shingles(text: str, size: int = SHINGLE) -> set[str]:
    key = dedup_key(text)
    if len(key) <= size:
        return {key} if key else set()
    return {key[i : i + size] for i in range(len(key) - size + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def near_duplicates(
    texts: Sequence[str],
    threshold: float = 0.8,
    scores: Sequence[float] | None = None,
) -> dict[int, tuple[int, float]]:
    """Indices to drop, each mapped to (index it duplicates, Jaccard similarity).

    Of a group of near-duplicates the one kept is the highest-scored, or the first when no
    scores are given, so the result does not depend on hash order.
    """
    # datasketch pulls in scipy (most of a second): import it only when deduplicating.
    from datasketch import MinHash, MinHashLSH

    sets = [shingles(t) for t in texts]
    lsh = MinHashLSH(threshold=threshold, num_perm=NUM_PERM)
    order = sorted(range(len(texts)), key=lambda i: (-(scores[i] if scores is not None else 0.0), i))
    dropped: dict[int, tuple[int, float]] = {}
    for i in order:
        if not sets[i]:
            continue
        signature = MinHash(num_perm=NUM_PERM)
        signature.update_batch([s.encode("utf-8") for s in sets[i]])
        best: tuple[int, float] | None = None
        for kept in lsh.query(signature):
            similarity = jaccard(sets[i], sets[kept])
            if similarity >= threshold and (best is None or similarity > best[1]):
                best = (kept, similarity)
        if best is not None:
            dropped[i] = best
        else:
            lsh.insert(i, signature)
    return dropped
