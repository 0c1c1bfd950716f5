"""Two guards of the hard filter rules, through `evaluate` / `evaluate_batch` only:

* language: a question or report whose language cannot be detected (`und`) is never a
  `language-mismatch` (nothing to compare), while a real mismatch still is;
* truncated: a report whose last line is a numbered list item without a full stop (`3. Something`)
  is not cut off, while prose that stops mid-word is.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from oresearch_cli.filtering.config import FilterConfig
from oresearch_cli.filtering.rules import Item, evaluate, evaluate_batch

FIXTURE = Path(__file__).parent / "fixtures" / "trace_example.txt"
EXAMPLE = FIXTURE.read_text(encoding="utf-8")
QUESTION = "How do the light reactions and the Calvin cycle of photosynthesis work together?"
QUESTION_FR = (
    "Comment les réactions lumineuses et le cycle de Calvin de la photosynthèse fonctionnent-ils ensemble ?"
)

# A report with nothing a language can be told from: arrows, symbols and emoji, no word characters.
NO_LANGUAGE_REPORT = "## ☀️ → 🌿\n\n→ ⚡ → 🔋 → 🍬 …\n\n— ✓ —\n"
FRENCH_REPORT = """## Introduction
La photosynthèse transforme l'énergie lumineuse en énergie chimique en deux étapes liées [1].

## Corps
Les réactions lumineuses produisent l'ATP et le NADPH sur les membranes des thylakoïdes, puis le
cycle de Calvin utilise ces molécules dans le stroma pour fixer le dioxyde de carbone [2].

## Conclusion
Les deux étapes travaillent ensemble pour fabriquer des sucres à partir de la lumière [1][2].

## Références
[1]. https://fr.wikipedia.org/wiki/Photosynth%C3%A8se - Photosynthèse
[2]. https://fr.wikipedia.org/wiki/Cycle_de_Calvin - Cycle de Calvin
"""


def _reasons(item: Item) -> list[str]:
    return evaluate(item, FilterConfig()).reasons


# -- language: the `und` guard ---------------------------------------------------------------------


def test_a_real_language_mismatch_is_rejected() -> None:
    """The control: the rule is on and compares languages, so the guards below mean something."""
    assert "language-mismatch" in _reasons(Item(id="en-q-fr-r", text=EXAMPLE, question=QUESTION_FR))
    assert "language-mismatch" in _reasons(Item(id="fr", text=FRENCH_REPORT, question=QUESTION))
    assert "language-mismatch" not in _reasons(Item(id="en", text=EXAMPLE, question=QUESTION))


def test_a_report_whose_language_cannot_be_detected_is_no_mismatch() -> None:
    for item in (
        Item(id="detected-q", text=NO_LANGUAGE_REPORT, question=QUESTION),
        Item(id="given-q", text=NO_LANGUAGE_REPORT, question=QUESTION, language="en"),
    ):
        assert "language-mismatch" not in _reasons(item), item.id


@pytest.mark.parametrize(
    ("question", "language"),
    [
        ("", None),  # no question at all
        ("??? — …", None),  # a question with nothing to detect
        (QUESTION_FR, "und"),  # the seed's language recorded as undetermined
    ],
)
def test_a_question_whose_language_is_und_is_no_mismatch(question: str, language: str | None) -> None:
    # The fixture's report is English; with the question's language unknown there is no mismatch.
    assert "language-mismatch" not in _reasons(
        Item(id="q", text=EXAMPLE, question=question, language=language)
    )


def test_the_und_guard_holds_in_a_batch_next_to_real_mismatches() -> None:
    items = [
        Item(id="und-report", text=NO_LANGUAGE_REPORT, question=QUESTION),
        Item(id="mismatch", text=FRENCH_REPORT, question=QUESTION),
        Item(id="und-question", text=EXAMPLE, question=""),
        Item(id="match", text=EXAMPLE, question=QUESTION),
    ]
    flagged = ["language-mismatch" in o.reasons for o in evaluate_batch(items, FilterConfig())]
    assert flagged == [False, True, False, False]


# -- truncated: the numbered-list exemption -------------------------------------------------------

REPORT_START = EXAMPLE.index("<suggested_answer>")
REFERENCES = EXAMPLE.index("## References")
REPORT_END = EXAMPLE.index("</suggested_answer>")


def _with_report_ending(ending: str) -> str:
    """The fixture trace whose report ends (after its conclusion, with no reference list after it)
    with `ending`, then closes normally."""
    return EXAMPLE[:REFERENCES] + ending.rstrip("\n") + "\n" + EXAMPLE[REPORT_END:]


def _bare_report_ending(ending: str) -> str:
    return EXAMPLE[REPORT_START + len("<suggested_answer>\n") : REFERENCES] + ending


@pytest.mark.parametrize("build", [_with_report_ending, _bare_report_ending], ids=["trace", "bare-report"])
@pytest.mark.parametrize(
    "ending",
    [
        "The open questions are:\n1. How fast RuBisCO works at high temperature\n2. Why C4 plants differ\n"
        "3. Something",
        "Steps in order:\n1) Light is absorbed\n2) Water is split\n10) Sugar leaves the cycle",
    ],
    ids=["dot", "paren"],
)
def test_a_report_ending_with_a_numbered_list_item_is_not_truncated(
    build: Callable[[str], str], ending: str
) -> None:
    assert "truncated" not in _reasons(Item(id="list", text=build(ending), question=QUESTION))


@pytest.mark.parametrize("build", [_with_report_ending, _bare_report_ending], ids=["trace", "bare-report"])
def test_prose_cut_off_mid_word_is_truncated(build: Callable[[str], str]) -> None:
    ending = "In short, the Calvin cycle spends the energy carriers in the str"
    assert "truncated" in _reasons(Item(id="cut", text=build(ending), question=QUESTION))
    whole = "In short, the Calvin cycle spends the energy carriers in the stroma."
    assert "truncated" not in _reasons(Item(id="whole", text=build(whole), question=QUESTION))


@pytest.mark.parametrize("build", [_with_report_ending, _bare_report_ending], ids=["trace", "bare-report"])
def test_a_sentence_cut_off_after_a_decimal_is_truncated(build: Callable[[str], str]) -> None:
    """`3.5 percent of the light is captu` starts like a list item (`3.`) but is prose cut off."""
    ending = "3.5 percent of the light is captu"
    assert "truncated" in _reasons(Item(id="decimal", text=build(ending), question=QUESTION))


def test_text_of_numbers_alone_is_und_and_no_mismatch() -> None:
    """Digits say nothing of a language: a question such as `2024?` or a line of figures must not
    be guessed into a language (langid said `af`) and then called a mismatch."""
    from oresearch_cli.filtering.language import detect_languages
    from oresearch_cli.textutil import detect_language

    figures = ["2024?", "12 345 % 2024", "2024: 1,204 | 2023: 1,150 | +4.7 %"]
    assert [detect_language(t) for t in figures] == ["und"] * 3
    assert detect_languages(figures) == ["und"] * 3
    assert "language-mismatch" not in _reasons(Item(id="year-q", text=FRENCH_REPORT, question="2024?"))
    assert "language-mismatch" not in _reasons(Item(id="year-q-en", text=EXAMPLE, question="2024?"))
