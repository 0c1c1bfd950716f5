"""Index terms for Chinese, Japanese and Korean text, which writes words without spaces.

A run of CJK characters would otherwise reach the search index as one token (tantivy's simple
tokenizer splits only on whitespace and punctuation), so a Chinese query matched only documents
holding the very same run. Two ways to break runs into terms, used alike for documents and
queries:

* `jieba`: words from jieba's dictionary and HMM (`rjieba`, jieba-rs), Chinese only, cut "for
  search": a long word also yields its dictionary sub-words (计算机 -> 计算, 算机, 计算机), so a
  query word matches a document holding it inside a longer compound and the other way round.
  (On benchmarks/bench_cjk_quality.py's questions, MRR@10: 0.89 cutting both sides for search,
  0.86 documents for search and queries plainly, 0.83 both plainly.) Kana and Hangul runs fall
  back to bigrams.
* `bigram`: overlapping character pairs of every run, as Lucene's CJKAnalyzer does; a lone
  character is its own term. Needs no dictionary and works for all three scripts.

A run is first split by script (Han, kana, Hangul), so 東京タワー gives 東京 + タワ ワー and no
cross-script pair like 京タ. Han characters are first folded from traditional to simplified
(`fold_han`, OpenCC's character table), as ASCII-folding does for accents: 學而時習之 and
学而时习之 give the same terms, so a query in either form finds text in either, and jieba, whose
dictionary is simplified, cuts traditional text into words too. `segment(text, scheme)` returns the text with each run replaced by
its terms separated by spaces; everything else (Latin words, digits, punctuation) is left for the
index's analyzer (lowercase, ASCII-fold, stem).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

_HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f"
_KANA = "\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f"
_HANGUL = "\u1100-\u11ff\u3130-\u318f\uac00-\ud7af"
CJK_RUN = re.compile(f"[{_HAN}{_KANA}{_HANGUL}]+")
# One script's stretch inside a run: terms never straddle two scripts.
_SCRIPT_RUN = re.compile(f"[{_HAN}]+|[{_KANA}]+|[{_HANGUL}]+")
_HAN_RUN = re.compile(f"[{_HAN}]+")
# Characters written without spaces between words (Han, kana): what passages count per character.
DENSE_CHAR = re.compile(f"[{_HAN}{_KANA}]")
_KANA_OR_HANGUL = re.compile(f"[{_KANA}{_HANGUL}]")
SCHEMES = ("jieba", "bigram")


def has_cjk(text: str) -> bool:
    return CJK_RUN.search(text) is not None


def bigrams(run: str) -> list[str]:
    """Overlapping pairs of a single-script run; a one-character run is its own term."""
    if len(run) < 2:
        return [run] if run else []
    return [run[i : i + 2] for i in range(len(run) - 1)]


def _bigram_terms(run: str) -> list[str]:
    return [t for part in _SCRIPT_RUN.findall(run) for t in bigrams(part)]


def _jieba_terms(run: str) -> list[str]:
    import rjieba  # imported lazily: its dictionary loads on first use (~0.3 s)

    terms: list[str] = []
    for part in _SCRIPT_RUN.findall(run):
        if _HAN_RUN.fullmatch(part):
            terms += [w for w in rjieba.cut_for_search(part) if w.strip()]
        else:  # kana, Hangul: no dictionary for them
            terms += bigrams(part)
    return terms


def _jieba_text(text: str) -> str:
    """All of a text without kana or Hangul cut by jieba in one call: it keeps Latin words,
    numbers and punctuation whole, so the result tokenizes as segmenting run by run does, at
    about 2.6x the speed (no Python work per run)."""
    import rjieba

    return " ".join(w for w in rjieba.cut_for_search(text) if not w.isspace())


_TERMS: dict[str, Callable[[str], list[str]]] = {"jieba": _jieba_terms, "bigram": _bigram_terms}


def check_scheme(scheme: str) -> str:
    if scheme not in _TERMS:
        raise ValueError(f"CJK segmentation {scheme!r}: use one of {', '.join(SCHEMES)}")
    return scheme


def cjk_terms(run: str, scheme: str) -> list[str]:
    """The index terms of one CJK run."""
    return _TERMS[check_scheme(scheme)](run)


def segment(text: str, scheme: str) -> str:
    """`text` with Han folded to simplified and every CJK run replaced by its terms,
    space-separated; text without CJK characters is returned unchanged."""
    terms = _TERMS[check_scheme(scheme)]
    if not has_cjk(text):
        return text
    text = fold_han(text)
    if scheme == "jieba" and not _KANA_OR_HANGUL.search(text):
        return _jieba_text(text)
    return CJK_RUN.sub(lambda m: " " + " ".join(terms(m.group(0))) + " ", text)


# -- traditional -> simplified ---------------------------------------------------------------------

T2S_PACKAGE = "opencc-python-reimplemented"  # Apache-2.0; only its data file is read
_T2S_FILE = "opencc/dictionary/TSCharacters.txt"
_t2s: dict[int, str] | None = None
_t2s_lock = threading.Lock()


def _t2s_table() -> dict[int, str]:
    """OpenCC's one-character traditional -> simplified mappings (the first reading of each),
    as a `str.translate` table. Found through the distribution's file list, not by importing
    its `opencc` module, whose name the official OpenCC binding shares."""
    global _t2s
    if _t2s is None:
        with _t2s_lock:
            if _t2s is None:
                try:
                    path = metadata.distribution(T2S_PACKAGE).locate_file(_T2S_FILE)
                    lines = Path(str(path)).read_text(encoding="utf-8").splitlines()
                except (metadata.PackageNotFoundError, OSError) as exc:
                    raise RuntimeError(
                        f"the traditional -> simplified table ({_T2S_FILE} of {T2S_PACKAGE}) is missing "
                        f"({exc}); reinstall ores (`pip install {T2S_PACKAGE}`)"
                    ) from None
                table: dict[int, str] = {}
                for line in lines:
                    source, _, targets = line.partition("\t")
                    if len(source) == 1 and targets:
                        table[ord(source)] = targets.split(" ")[0]
                _t2s = table
    return _t2s


def fold_han(text: str) -> str:
    """Traditional Han characters as simplified ones, character by character (学/學 -> 学)."""
    return text.translate(_t2s_table())
