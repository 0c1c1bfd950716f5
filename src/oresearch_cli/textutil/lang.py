"""Language tags for questions and reports (ISO 639-1 codes, as DeepResearch Bench uses)."""

from __future__ import annotations

import re

_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_KANA = re.compile(r"[\u3040-\u30ff]")
_HANGUL = re.compile(r"[\uac00-\ud7af]")
_LETTER = re.compile(r"\w", re.UNICODE)


def detect_language(text: str) -> str:
    """`zh`, `ja`, `ko` by script (reliable even for one short question), else langid's guess.

    Script rules go first because statistical models misjudge short CJK questions that mix in
    Latin names and numbers; 'und' when there is nothing to judge.
    """
    letters = len(_LETTER.findall(text))
    if letters == 0:
        return "und"
    if _KANA.search(text):
        return "ja"
    if len(_HANGUL.findall(text)) / letters > 0.2:
        return "ko"
    if len(_HAN.findall(text)) / letters > 0.2:
        return "zh"
    import py3langid  # imported lazily: loading its model takes most of a second

    code, _score = py3langid.classify(text)
    return str(code)
