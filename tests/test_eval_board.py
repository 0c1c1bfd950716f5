"""The eval leaderboard: published numbers with their sources, the table, the chart, the report."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from oresearch_cli.errors import InputError
from oresearch_cli.evaluation import (
    DRB_REFERENCE,
    BoardEntry,
    board_rows,
    board_table,
    chart_size,
    default_published_path,
    load_published,
    write_chart,
    write_report,
)
from oresearch_cli.evaluation.board import MARK
from oresearch_cli.scoring.drb import DIMENSIONS
from oresearch_cli.scoring.drb_race import DrbSummary

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _dims(base: float) -> dict[str, float]:
    return {d: base + i for i, d in enumerate(DIMENSIONS)}


def _ours(name: str, overall: float | None, mode: str = "race", **kw) -> BoardEntry:
    dims = _dims(overall - 2) if overall is not None else {}
    return BoardEntry(name, "ours", mode, overall, dims, **kw)


def _published(name: str, overall: float | None, source: str = "Paper X, https://x.org", **kw) -> BoardEntry:
    return BoardEntry(name, "published", "published", overall, source=source, **kw)


def _render(table) -> str:
    console = Console(width=400, record=True, file=io.StringIO())
    console.print(table)
    return console.export_text()


# --- the shipped published numbers --------------------------------------------------------------


def test_shipped_file_every_entry_has_a_source_and_the_papers_numbers() -> None:
    entries = load_published()
    assert default_published_path().name == "published_scores.json"
    assert len(entries) > 20
    assert all(e.kind == "published" and e.mode == "published" and e.source for e in entries)
    by_name = {(e.system, e.source): e for e in entries}
    paper = {e.system: e for e in load_published(sources=["o-researcher-paper"])}
    assert {name: e.overall for name, e in paper.items()} == {
        "O-Researcher-RL (Qwen-2.5-72B-Instruct)": 48.48,
        "Qwen-2.5-72B-Instruct (O-Researcher's base model)": 33.38,
        "GPT-5": 46.77,
        "OpenAI o3": 43.71,
        "Tongyi DeepResearch": 45.66,
        "MiroThinker": 41.79,
    }
    assert paper["O-Researcher-RL (Qwen-2.5-72B-Instruct)"].effective_citations == 26.01
    assert paper["Qwen-2.5-72B-Instruct (O-Researcher's base model)"].effective_citations == 8.96
    assert all("arxiv.org/abs/2601.03743" in (e.source or "") for e in paper.values())
    # DRB's README tables, each edition its own source
    v1 = {e.system: e for e in load_published(sources=["drb-readme-v1.0"])}
    assert v1["Gemini-2.5-Pro Deep Research"].overall == 48.88
    assert v1["OpenAI Deep Research"].overall == 46.98
    assert v1["OpenAI Deep Research"].citation_accuracy == 77.96
    assert v1["Gemini-2.5-Pro Deep Research"].effective_citations == 111.21
    assert "214741e474a5347ea7f869ab79d27e7c8734ede7" in (v1["OpenAI Deep Research"].source or "")
    july = {e.system: e for e in load_published(sources=["drb-readme-2025-07-15"])}
    assert july["OpenAI Deep Research"].overall == 46.45
    assert july["OpenAI Deep Research"].dimensions == {
        "comprehensiveness": 46.46,
        "insight": 43.73,
        "instruction_following": 49.39,
        "readability": 47.22,
    }
    assert july["Gemini-2.5-Pro Deep Research"].overall == 48.92
    assert july["Claude-Researcher"].citation_accuracy is None  # "-" in the README
    # no number without a source line in the file: each entry's source id is one of its sources
    doc = json.loads(default_published_path().read_text(encoding="utf-8"))
    assert all(row["source"] in doc["sources"] for row in doc["entries"])
    assert all(src.get("url") and src.get("read") for src in doc["sources"].values())
    assert len(by_name) == len(entries)  # a system appears once per source


def test_filters_by_category_and_unknown_source() -> None:
    agents = load_published(categories=["Deep Research Agent"])
    assert agents and all(e.category == "Deep Research Agent" for e in agents)
    with pytest.raises(InputError, match="unknown source"):
        load_published(sources=["nope"])


@pytest.mark.parametrize(
    ("content", "expect"),
    [
        ("{not json", "not readable as JSON"),
        ('{"entries": []}', '"sources"'),
        ('{"sources": {}, "entries": {}}', '"entries" must be a list'),
        (
            '{"sources": {"s": {"title": "T"}}, "entries": [{"system": "A", "source": "t", "overall": 1}]}',
            "entry 1",
        ),
        (
            '{"sources": {"s": {"title": "T"}}, "entries": [{"system": "A", "source": "s", "overall": "x"}]}',
            "overall",
        ),
        (
            '{"sources": {"s": {"title": "T"}}, "entries": [{"system": "A", "source": "s", "overall": 101}]}',
            "0-100",
        ),
        (
            '{"sources": {"s": {"title": "T"}}, "entries": [{"system": "A", "source": "s", "overall": 40,'
            ' "dimensions": {"depth": 40}}]}',
            "unknown dimension",
        ),
        (
            '{"sources": {"s": {"title": "T"}}, "entries": [{"system": "A", "source": "s", "score": 40}]}',
            "unknown field",
        ),
        ('{"sources": {"s": {"title": "T"}}, "entries": [{"source": "s", "overall": 40}]}', "system"),
        ('{"sources": {"s": {"title": "T"}}, "entries": [7]}', "expected an object"),
    ],
)
def test_malformed_file_is_one_line_error(tmp_path: Path, content: str, expect: str) -> None:
    path = tmp_path / "pub.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError) as info:
        load_published(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    assert expect in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        load_published(tmp_path / "absent.json")


# --- the entry ----------------------------------------------------------------------------------


def test_entry_checks_and_roundtrip() -> None:
    with pytest.raises(ValueError, match="source"):
        BoardEntry("X", "published", "published", 40.0)
    with pytest.raises(ValueError, match="goes with kind"):
        BoardEntry("X", "ours", "published", 40.0)
    with pytest.raises(ValueError, match="mode"):
        BoardEntry("X", "ours", "fancy", 40.0)
    with pytest.raises(ValueError, match="quality"):
        BoardEntry("X", "ours", "race", 40.0, quality=11)
    entry = _ours("run-1", 42.0, judge="j", cost_usd=0.5, n_scored=3, n_failed=1, extras={"k": 1})
    assert BoardEntry.from_dict(json.loads(json.dumps(entry.to_dict()))) == entry


def test_from_drb_summary_scales_to_100() -> None:
    summary = DrbSummary(dict(zip(DIMENSIONS, (0.41, 0.38, 0.47, 0.44), strict=True)), 0.4218, 98, 2)
    entry = BoardEntry.from_drb_summary("run-7", summary, judge="qwen")
    assert entry.overall == pytest.approx(42.18)
    assert entry.dimensions["insight"] == pytest.approx(38.0)
    assert (entry.n_scored, entry.n_failed, entry.kind, entry.mode) == (98, 2, "ours", "race")
    assert entry.reference == DRB_REFERENCE and entry.comparable and entry.caveat is None
    pointwise = BoardEntry.from_drb_summary("run-8", summary, mode="race-pointwise", reference=None)
    assert not pointwise.comparable and "pointwise" in (pointwise.caveat or "")
    relative = BoardEntry.from_drb_summary("run-9", summary, reference="run-7")
    assert not relative.comparable and "run-7" in (relative.caveat or "")


# --- the table ----------------------------------------------------------------------------------


def _board() -> list[BoardEntry]:
    return [
        _published("Pub Low", 30.0, citation_accuracy=80.0),
        _ours("ours-mid", 41.5, judge="small-judge", n_scored=9, n_failed=1, cost_usd=0.0123),
        _ours("ours-pointwise", 70.0, mode="race-pointwise", judge="small-judge"),
        _published("Pub High", 48.5, source="DRB README, https://github.com/x (2025-07-15)"),
        BoardEntry("ours-rules", "ours", "rules", None),
        _ours("ours-vs-run", 55.0, reference="ours-mid"),
    ]


def test_table_order_labels_and_missing_values() -> None:
    ordered, rows, notes = board_rows(_board())
    assert [e.system for e in ordered] == [
        "Pub High", "ours-mid", "Pub Low", "ours-pointwise", "ours-vs-run", "ours-rules",
    ]  # fmt: skip
    ranks = [row[0] for row in rows]
    assert ranks == ["1", "2", "3", "-", "-", "-"]  # the not comparable ones take no rank
    by_name = {e.system: row for e, row in zip(ordered, rows, strict=True)}
    assert by_name["ours-mid"][2] == "ours"
    assert by_name["Pub High"][2] == "published [1]" and by_name["Pub Low"][2] == "published [2]"
    assert list(notes) == ["DRB README, https://github.com/x (2025-07-15)", "Paper X, https://x.org"]
    assert by_name["ours-pointwise"][1] == f"ours-pointwise {MARK}"
    assert "not comparable with DRB" in by_name["ours-pointwise"][-1]
    assert "relative to ours-mid" in by_name["ours-vs-run"][-1]
    assert by_name["ours-mid"][11] == "9 (+1 failed)"
    assert by_name["ours-mid"][12] == "0.0123"
    assert by_name["ours-rules"][3:11] == ["-"] * 8
    assert by_name["Pub High"][8] == "-" and by_name["Pub Low"][8] == "80.00"

    text = _render(board_table(_board()))
    assert (
        text.index("Pub High") < text.index("ours-mid") < text.index("Pub Low") < text.index("ours-pointwise")
    )
    assert "[1] DRB README, https://github.com/x (2025-07-15)" in text
    assert "[2] Paper X, https://x.org" in text
    assert f"{MARK} not comparable with DRB's numbers" in text
    assert "Our RACE judge: small-judge" in text


# --- the chart and the report -------------------------------------------------------------------


def _png_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def test_chart_is_a_png_of_the_documented_size(tmp_path: Path) -> None:
    entries = _board() + load_published(sources=["o-researcher-paper"])
    path = write_chart(entries, tmp_path / "sub" / "board.png")
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000
    assert _png_size(path) == chart_size(entries)
    width, height = chart_size(entries)
    assert width == 1400 and height == round((2.2 + 0.3 * 11) * 100)  # 11 entries with an overall
    # matplotlib reads it back as height x width x channels
    import matplotlib.image

    assert matplotlib.image.imread(path).shape[:2] == (height, width)


def test_chart_single_panel_and_empty(tmp_path: Path) -> None:
    paper = load_published(sources=["o-researcher-paper"])  # no dimensions: one panel
    path = write_chart(paper, tmp_path / "paper.png", dpi=50)
    assert _png_size(path) == chart_size(paper, dpi=50) == (700, 250)
    empty = write_chart([BoardEntry("r", "ours", "rules", None)], tmp_path / "empty.png")
    assert _png_size(empty) == (1400, 500)


def test_report_embeds_chart_and_lists_sources(tmp_path: Path) -> None:
    entries = [*_board(), _published("A <b>bold</b> | pipe", 20.0)]
    paths = write_report(entries, tmp_path / "out")
    assert paths.chart is not None and paths.chart.name == "leaderboard.png" and paths.chart.exists()
    md = paths.markdown.read_text(encoding="utf-8")
    assert "![" in md and "](leaderboard.png)" in md
    assert "## Sources of the published numbers" in md
    assert "1. DRB README, https://github.com/x (2025-07-15)" in md
    assert "2. Paper X, https://x.org" in md
    assert "| **ours-mid** |" in md
    assert "A <b>bold</b> \\| pipe" in md  # a pipe cannot break the Markdown table
    assert "reference DRB reference articles" in md  # our runs' details
    page = paths.html.read_text(encoding="utf-8")
    assert 'src="data:image/png;base64,' in page  # self-contained
    assert "A &lt;b&gt;bold&lt;/b&gt;" in page and "<b>bold</b>" not in page
    assert "<li>Paper X, https://x.org</li>" in page

    no_chart = write_report(entries, tmp_path / "plain", chart=False)
    assert no_chart.chart is None and not (tmp_path / "plain" / "leaderboard.png").exists()
    assert "No chart" in no_chart.markdown.read_text(encoding="utf-8")


def test_published_board_report(tmp_path: Path) -> None:
    """The shipped numbers go through the whole report: judges of DRB's editions in the sources."""
    paths = write_report(load_published(sources=["drb-readme-v1.0", "o-researcher-paper"]), tmp_path)
    md = paths.markdown.read_text(encoding="utf-8")
    assert "judge: gemini-2.5-pro-preview-06-05" in md
    assert "https://arxiv.org/abs/2601.03743" in md


def test_no_torch_and_lazy_heavy_imports() -> None:
    """Importing the package pulls in neither matplotlib nor scipy; using it never pulls in torch."""
    script = (
        "import sys, tempfile, pathlib\n"
        "import oresearch_cli.evaluation as ev\n"
        "assert 'matplotlib' not in sys.modules and 'scipy' not in sys.modules, 'eager import'\n"
        "ev.judge_agreement({1: {'overall': 1}, 2: {'overall': 2}}, {1: {'overall': 2}, 2: {'overall': 3}})\n"
        "ev.write_chart(ev.load_published(sources=['o-researcher-paper']),"
        " pathlib.Path(tempfile.mkdtemp()) / 'c.png', dpi=20)\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
