"""The eval leaderboard: our scored runs next to published DeepResearch Bench numbers.

One record, `BoardEntry`, holds one row of the board, ours or published; the eval stage builds
ours from its scored runs (`BoardEntry.from_drb_summary` takes a RACE summary as it is, on DRB's
0-1 scale) and `load_published` reads the published ones from data/published_scores.json, where
every number names the source it was read in. Three views of a list of entries:

- `board_table`: a rich table for the terminal, best RACE overall first;
- `write_chart`: a PNG (matplotlib, Agg, imported only when drawing): RACE overall of every
  entry as horizontal bars, ours in colour, published in grey; beside it our runs' four RACE
  dimensions next to the best published system's;
- `write_report`: Markdown and a self-contained HTML page with the chart, the table and the
  sources of the published numbers.

What is comparable with what is the point of the board, so each row says it:

- mode "race": RACE as DRB runs it, our article against DRB's reference article for the task
  (`reference` None or `DRB_REFERENCE`); comparable with DRB's numbers, with the caveat that
  the judge may differ (DRB's published numbers were judged by Gemini-2.5-Pro);
- "race" with another `reference` (say, another run's articles): relative to that run, not to DRB;
- "race-pointwise": the judge scored our article alone (no reference article): a 0-100 number
  on a different footing, never comparable with DRB's;
- "rules": rule metrics only (no judge), no RACE numbers; `extras` may carry the metrics;
- "published": a number read in a paper or on DRB's leaderboard (`source` says which).
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table

from oresearch_cli.errors import InputError, OresError
from oresearch_cli.scoring.drb import DIMENSIONS

if TYPE_CHECKING:
    from oresearch_cli.scoring.drb_race import DrbSummary

KINDS = ("ours", "published")
MODES = ("race", "race-pointwise", "rules", "published")
DRB_REFERENCE = "drb"  # `reference` of a RACE run against DRB's own reference articles
MARK = "†"  # after the name of a run whose RACE numbers are not comparable with DRB's
SHORT = {
    "comprehensiveness": "Comp.",
    "insight": "Insight",
    "instruction_following": "Inst.",
    "readability": "Read.",
}
PUBLISHED_FILE = "published_scores.json"
CHART_FILE = "leaderboard.png"
CHART_WIDTH_IN = 14.0  # the chart is CHART_WIDTH_IN x chart_height_in(entries) inches at `dpi`
CHART_DPI = 100
OURS_COLOUR, PUBLISHED_COLOUR = "#1f77b4", "#b0b0b0"
DIMENSION_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd")


Number = float | int


@dataclass(frozen=True)
class BoardEntry:
    """One row of the board. Scores are on DRB's 0-100 scale (50 = on par with the reference).

    system: a run id or name of ours, or a published system's name
    kind: "ours" or "published"
    mode: "race", "race-pointwise", "rules" or "published" (see the module's docstring)
    overall: RACE overall, 0-100; None when not scored with RACE
    dimensions: RACE per dimension (keys of scoring.drb.DIMENSIONS), 0-100; may be empty
    citation_accuracy: FACT citation accuracy, percent
    effective_citations: FACT effective (supported) citations, mean per task
    quality: a DeepResearchGym-style mean quality, 0-10 (ours only)
    cost_usd: what scoring (or the run) cost, when known
    n_scored / n_failed: tasks with a score / tasks whose scoring failed (left out of the means)
    judge: the judge model
    reference: what RACE compared against: DRB_REFERENCE (DRB's reference articles), a run id,
        or None (for "race": DRB's reference; for the other modes: none)
    source: for published numbers, where they were read (title, URL, date)
    category: the source's grouping ("Deep Research Agent", "LLM with Search Tools"...)
    note: anything a reader should know about this row's numbers
    extras: mode-specific numbers for the report's details (e.g. rule metrics of a "rules" run)
    """

    system: str
    kind: str
    mode: str
    overall: float | None
    dimensions: Mapping[str, float] = field(default_factory=dict)
    citation_accuracy: float | None = None
    effective_citations: float | None = None
    quality: float | None = None
    cost_usd: float | None = None
    n_scored: int | None = None
    n_failed: int | None = None
    judge: str | None = None
    reference: str | None = None
    source: str | None = None
    category: str | None = None
    note: str | None = None
    extras: Mapping[str, Number | str | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = _problems(self)
        if problems:
            raise ValueError(f"board entry {self.system!r}: {'; '.join(problems)}")

    @property
    def ours(self) -> bool:
        return self.kind == "ours"

    @property
    def comparable(self) -> bool:
        """Whether the RACE numbers stand on DRB's footing: published ones, and ours scored
        against DRB's reference articles (the judge may still differ)."""
        if self.kind == "published":
            return True
        return self.mode == "race" and self.reference in (None, DRB_REFERENCE)

    @property
    def caveat(self) -> str | None:
        """Why this row's RACE numbers cannot be set beside DRB's, or None when they can."""
        if self.mode == "race-pointwise":
            return "pointwise (no reference article): not comparable with DRB's numbers"
        if self.mode == "race" and not self.comparable:
            return f"relative to {self.reference}, not to DRB's reference: not comparable with DRB's numbers"
        if self.mode == "rules":
            return "rule metrics only, no RACE score"
        return None

    @classmethod
    def from_drb_summary(
        cls,
        system: str,
        summary: DrbSummary,
        *,
        mode: str = "race",
        reference: str | None = DRB_REFERENCE,
        **rest: Any,
    ) -> BoardEntry:
        """Our row from a RACE summary (`scoring.drb_race.summarize`), whose shares are 0-1 as in
        DRB's race_result.txt; the board shows them x100 as DRB's leaderboard does."""
        return cls(
            system=system,
            kind="ours",
            mode=mode,
            overall=100.0 * summary.overall,
            dimensions={d: 100.0 * v for d, v in summary.dimensions.items()},
            n_scored=summary.scored,
            n_failed=summary.failed,
            reference=reference,
            **rest,
        )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["dimensions"] = dict(self.dimensions)
        out["extras"] = dict(self.extras)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BoardEntry:
        """The inverse of `to_dict`; ValueError/TypeError on a malformed mapping."""
        return cls(**{**data, "dimensions": dict(data.get("dimensions") or {})})


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _problems(entry: BoardEntry) -> list[str]:
    out: list[str] = []
    if not isinstance(entry.system, str) or not entry.system.strip():
        out.append("system must be a non-empty string")
    if entry.kind not in KINDS:
        out.append(f"kind {entry.kind!r} is not one of {', '.join(KINDS)}")
    if entry.mode not in MODES:
        out.append(f"mode {entry.mode!r} is not one of {', '.join(MODES)}")
    elif (entry.kind == "published") != (entry.mode == "published"):
        out.append("mode 'published' goes with kind 'published' and only with it")
    if entry.kind == "published" and not entry.source:
        out.append("a published entry needs its source")
    if not isinstance(entry.dimensions, Mapping):
        out.append("dimensions must be a mapping")
    else:
        unknown = [d for d in entry.dimensions if d not in DIMENSIONS]
        if unknown:
            out.append(
                f"unknown dimension(s) {', '.join(map(str, unknown))} (known: {', '.join(DIMENSIONS)})"
            )
        for name, value in entry.dimensions.items():
            if not _finite(value) or not 0 <= value <= 100:
                out.append(f"dimension {name} must be a number in 0-100, not {value!r}")
    for name, top in (("overall", 100.0), ("citation_accuracy", 100.0), ("quality", 10.0)):
        value = getattr(entry, name)
        if value is not None and (not _finite(value) or not 0 <= value <= top):
            out.append(f"{name} must be a number in 0-{top:g}, not {value!r}")
    for name in ("effective_citations", "cost_usd"):
        value = getattr(entry, name)
        if value is not None and (not _finite(value) or value < 0):
            out.append(f"{name} must be a number >= 0, not {value!r}")
    for name in ("judge", "reference", "source", "category", "note"):
        value = getattr(entry, name)
        if value is not None and not isinstance(value, str):
            out.append(f"{name} must be text, not {value!r}")
    for name in ("n_scored", "n_failed"):
        value = getattr(entry, name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            out.append(f"{name} must be an integer >= 0, not {value!r}")
    return out


# --- published numbers --------------------------------------------------------------------------


def default_published_path() -> Path:
    """The file shipped with the repository: <repo>/data/published_scores.json."""
    return Path(__file__).resolve().parents[3] / "data" / PUBLISHED_FILE


def _source_text(source_id: str, source: Mapping[str, Any]) -> str:
    title = source.get("title") or source_id
    parts = [str(title)]
    if source.get("url"):
        parts.append(str(source["url"]))
    text = ", ".join(parts)
    return f"{text} ({source['date']})" if source.get("date") else text


def load_published(
    path: str | Path | None = None,
    *,
    sources: Iterable[str] | None = None,
    categories: Iterable[str] | None = None,
) -> list[BoardEntry]:
    """The published entries of `path` (default: the shipped data/published_scores.json), in
    file order; `sources` keeps only those of the named source ids (keys of the file's "sources"),
    `categories` only those of the named categories. A file that cannot be used raises one
    InputError line naming the file and the entry."""
    file = Path(path) if path is not None else default_published_path()
    fix = "fix the file or pass another one"
    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{file}: no such file; pass the path of a published-scores JSON file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{file}: not readable as JSON ({exc}); {fix}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("sources"), dict):
        raise InputError(f'{file}: expected an object with "sources" (an object) and "entries"; {fix}')
    known = doc["sources"]
    rows = doc.get("entries")
    if not isinstance(rows, list):
        raise InputError(f'{file}: "entries" must be a list of entries; {fix}')
    wanted = set(sources) if sources is not None else None
    if wanted is not None and (unknown := sorted(wanted - set(known))):
        raise InputError(f"{file}: unknown source(s) {', '.join(unknown)}; known: {', '.join(known)}")
    wanted_categories = set(categories) if categories is not None else None
    out: list[BoardEntry] = []
    for i, row in enumerate(rows, 1):
        where = f"{file}: entry {i}"
        if not isinstance(row, dict):
            raise InputError(f"{where}: expected an object, got {type(row).__name__}; {fix}")
        name = row.get("system")
        if name is not None:
            where += f" ({name})"
        source_id = row.get("source")
        if not isinstance(source_id, str) or not isinstance(known.get(source_id), dict):
            raise InputError(
                f'{where}: "source" must name one of the file\'s sources ({", ".join(known)}), '
                f"not {source_id!r}; {fix}"
            )
        allowed = {
            "system", "source", "category", "overall", "dimensions", "citation_accuracy",
            "effective_citations", "note",
        }  # fmt: skip
        if extra := sorted(set(row) - allowed):
            raise InputError(
                f"{where}: unknown field(s) {', '.join(extra)}; known: {', '.join(sorted(allowed))}"
            )
        source = known[source_id]
        dims = row.get("dimensions") or {}
        try:
            entry = BoardEntry(
                system=name,  # type: ignore[arg-type]  # BoardEntry's own check says what is wrong
                kind="published",
                mode="published",
                overall=row.get("overall"),
                dimensions=dims,
                citation_accuracy=row.get("citation_accuracy"),
                effective_citations=row.get("effective_citations"),
                judge=source.get("judge"),
                source=_source_text(source_id, source),
                category=row.get("category"),
                note=row.get("note"),
            )
        except (ValueError, TypeError) as exc:
            raise InputError(f"{where}: {exc}; {fix}") from None
        if (wanted is None or source_id in wanted) and (
            wanted_categories is None or entry.category in wanted_categories
        ):
            out.append(entry)
    return out


# --- the table ----------------------------------------------------------------------------------


def sort_entries(entries: Iterable[BoardEntry]) -> list[BoardEntry]:
    """The board's order: the ranked entries (a RACE overall comparable with DRB's), best first;
    then ours whose overall is not comparable (pointwise, another reference), best first; then
    entries without an overall. Ours before published on a tie."""
    return sorted(
        entries,
        key=lambda e: (
            e.overall is None,
            not e.comparable,
            -(e.overall or 0.0),
            not e.ours,
            e.system.casefold(),
        ),
    )


def ranked(entry: BoardEntry) -> bool:
    """Whether the entry takes a rank on the board: a RACE overall on DRB's footing."""
    return entry.overall is not None and entry.comparable


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _footnotes(entries: Sequence[BoardEntry]) -> dict[str, int]:
    """Source text -> footnote number, in order of first appearance."""
    notes: dict[str, int] = {}
    for entry in entries:
        if entry.source and entry.source not in notes:
            notes[entry.source] = len(notes) + 1
    return notes


COLUMNS = [
    "#", "system", "who", "RACE", *(SHORT[d] for d in DIMENSIONS), "C.Acc %", "E.Cit", "quality",
    "scored", "cost $", "judge", "note",
]  # fmt: skip


def board_rows(entries: Iterable[BoardEntry]) -> tuple[list[BoardEntry], list[list[str]], dict[str, int]]:
    """The board as text cells, shared by the rich table, Markdown and HTML: the sorted entries,
    one row of COLUMNS per entry, and the source footnotes (source text -> number)."""
    ordered = sort_entries(entries)
    notes = _footnotes(ordered)
    rows: list[list[str]] = []
    rank = 0
    for entry in ordered:
        rank += ranked(entry)
        name = entry.system + (f" {MARK}" if _marked(entry) else "")
        who = f"published [{notes[entry.source]}]" if entry.source else entry.kind
        scored = "-"
        if entry.n_scored is not None:
            scored = str(entry.n_scored) + (f" (+{entry.n_failed} failed)" if entry.n_failed else "")
        note = "; ".join(x for x in (entry.caveat, entry.note) if x)
        rows.append(
            [
                str(rank) if ranked(entry) else "-",
                name,
                who,
                _num(entry.overall),
                *(_num(entry.dimensions.get(d)) for d in DIMENSIONS),
                _num(entry.citation_accuracy),
                _num(entry.effective_citations),
                _num(entry.quality),
                scored,
                _num(entry.cost_usd, 4 if (entry.cost_usd or 0) < 1 else 2),
                (entry.judge or "-") if entry.ours else "-",
                note or "-",
            ]
        )
    return ordered, rows, notes


def _marked(entry: BoardEntry) -> bool:
    return entry.overall is not None and not entry.comparable


def _judges_line(entries: Sequence[BoardEntry]) -> str | None:
    ours = sorted({e.judge for e in entries if e.ours and e.judge and e.mode.startswith("race")})
    if not ours:
        return None
    return (
        f"Our RACE judge: {', '.join(ours)}. DRB's published RACE numbers were judged by Gemini-2.5-Pro; "
        "with another judge ours are an estimate on DRB's scale."
    )


def _legend(entries: Sequence[BoardEntry]) -> list[str]:
    lines = ["RACE and its four dimensions: 0-100, 50 = on par with DRB's reference article."]
    if any(_marked(e) for e in entries):
        lines.append(f"{MARK} not comparable with DRB's numbers (see the note), so not ranked.")
    if judges := _judges_line(entries):
        lines.append(judges)
    return lines


def board_table(
    entries: Iterable[BoardEntry], title: str | None = "Leaderboard (DeepResearch Bench)"
) -> Table:
    """The board as a rich table: best RACE overall first, our rows in bold, published rows
    numbered against the source footnotes in the caption, "-" for what is missing."""
    ordered, rows, notes = board_rows(entries)
    caption = [*_legend(ordered), *(f"[{n}] {text}" for text, n in notes.items())]
    table = Table(
        title=title,
        title_justify="left",
        header_style="bold",
        caption="\n".join(caption),
        caption_justify="left",
    )
    for column in COLUMNS:
        numeric = column in ("#", "RACE", "C.Acc %", "E.Cit", "quality", "cost $") or column in SHORT.values()
        table.add_column(column, justify="right" if numeric else "left", overflow="fold")
    for entry, row in zip(ordered, rows, strict=True):
        style = "bold" if entry.ours else ("dim" if entry.overall is None else None)
        table.add_row(*row, style=style)
    return table


# --- the chart ----------------------------------------------------------------------------------


def _charted(entries: Iterable[BoardEntry]) -> list[BoardEntry]:
    """The entries the overall panel draws (those with a RACE overall), in the board's order."""
    return [e for e in sort_entries(entries) if e.overall is not None]


def _dimension_rows(entries: Sequence[BoardEntry]) -> list[BoardEntry]:
    """Our entries with all four dimensions, then the best published one with them."""
    ours = [e for e in entries if e.ours and all(d in e.dimensions for d in DIMENSIONS)]
    published = [e for e in entries if not e.ours and all(d in e.dimensions for d in DIMENSIONS)]
    return ours + published[:1]


def chart_height_in(entries: Iterable[BoardEntry]) -> float:
    """The chart's height in inches: room for every bar of the overall panel, at least 5."""
    bars = len(_charted(entries))
    return max(5.0, 2.2 + 0.3 * bars)


def chart_size(entries: Iterable[BoardEntry], dpi: int = CHART_DPI) -> tuple[int, int]:
    """The PNG's (width, height) in pixels as `write_chart` draws it."""
    entries = list(entries)
    return round(CHART_WIDTH_IN * dpi), round(chart_height_in(entries) * dpi)


def _label(entry: BoardEntry, notes: Mapping[str, int], width: int = 40) -> str:
    name = entry.system if len(entry.system) <= width else entry.system[: width - 1] + "…"
    if entry.ours:
        if entry.mode == "race-pointwise":
            return f"{name} (ours, pointwise {MARK})"
        return f"{name} (ours{'' if entry.comparable else ' ' + MARK})"
    return f"{name} [{notes[entry.source]}]" if entry.source else name


def _import_pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise OresError(
            "leaderboard chart: matplotlib is not installed; pip install matplotlib (or ores[train]) "
            "to draw it"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_chart(
    entries: Iterable[BoardEntry],
    path: str | Path,
    *,
    title: str = "DeepResearch Bench: RACE overall",
    dpi: int = CHART_DPI,
) -> Path:
    """Draw the board as a PNG of exactly `chart_size(entries, dpi)` pixels at `path`.

    Left: RACE overall of every entry that has one, as horizontal bars in the board's order
    (best on top), ours in blue, published in grey, each labelled with its value, a dashed line
    at 50 (on par with the reference); our runs that are not comparable with DRB (pointwise...)
    come last, hatched, below a dotted line. Right, when any entry has all four dimensions: our
    runs' dimensions beside the best published system's (paler). Below: the caveats and the
    sources of the published numbers."""
    plt = _import_pyplot()
    from matplotlib.patches import Patch

    entries = list(entries)
    ordered = sort_entries(entries)
    notes = _footnotes(ordered)
    bars = _charted(ordered)
    dims = _dimension_rows(bars)
    footer = _legend(ordered)[1:] + [f"[{n}] {_short_source(text)}" for text, n in notes.items()]
    width_px, height_px = chart_size(entries, dpi)
    fig = plt.figure(figsize=(width_px / dpi, height_px / dpi), dpi=dpi, layout="constrained")
    try:
        # the footer (caveats, sources, legends) takes the bottom; the panels are laid out above it
        footer_in = 0.14 * (len(footer) + bool(dims)) + 0.15
        footer_frac = footer_in / (height_px / dpi)
        fig.get_layout_engine().set(rect=(0.0, footer_frac, 1.0, 1.0 - footer_frac))
        grid = fig.add_gridspec(1, 2 if dims else 1, width_ratios=[3, 2] if dims else [1])
        ax = fig.add_subplot(grid[0, 0])
        if bars:
            ys = list(range(len(bars)))[::-1]  # best on top
            values = [float(e.overall or 0.0) for e in bars]
            for y, value, entry in zip(ys, values, bars, strict=True):
                odd = entry.ours and not entry.comparable
                ax.barh(
                    y,
                    value,
                    color=OURS_COLOUR if entry.ours else PUBLISHED_COLOUR,
                    hatch="//" if odd else None,
                    edgecolor="#0b3d66" if odd else "white",
                )
                ax.text(
                    value + 0.4,
                    y,
                    f"{value:.2f}",
                    va="center",
                    fontsize=8,
                    fontweight="bold" if entry.ours else "normal",
                    bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.3, "alpha": 0.8},
                )
            ax.set_yticks(ys)
            ax.set_yticklabels([_label(e, notes, width=36) for e in bars], fontsize=8)
            for tick, entry in zip(ax.get_yticklabels(), bars, strict=True):
                if entry.ours:
                    tick.set_fontweight("bold")
                    tick.set_color(OURS_COLOUR)
            odd_from = next((i for i, e in enumerate(bars) if not e.comparable), None)
            if odd_from:  # a dotted line between the ranked bars and the others
                ax.axhline(ys[odd_from] + 0.5, color="black", linestyle=":", linewidth=1)
            ax.set_xlim(0, max(60.0, max(values) + 7))
            ax.set_ylim(-0.6, len(bars) - 0.4)
            ax.axvline(50, color="black", linestyle="--", linewidth=0.8)
        else:
            ax.text(0.5, 0.5, "no RACE scores to chart", ha="center", va="center", transform=ax.transAxes)
            ax.set_yticks([])
        ax.set_xlabel("RACE overall, 0-100 (dashed: 50 = on par with the reference article)")
        ax.set_title(title, loc="left", fontsize=11, fontweight="bold")
        ax.grid(axis="x", alpha=0.3)
        ax.set_axisbelow(True)
        handles = [Patch(color=OURS_COLOUR, label="ours"), Patch(color=PUBLISHED_COLOUR, label="published")]
        if any(e.ours and not e.comparable for e in bars):
            handles.append(
                Patch(
                    facecolor=OURS_COLOUR,
                    hatch="//",
                    edgecolor="#0b3d66",
                    label=f"ours, not comparable {MARK}",
                )
            )

        if dims:
            ax2 = fig.add_subplot(grid[0, 1])
            step = 1.0 / (len(DIMENSIONS) + 1)
            yticks, ylabels = [], []
            for i, entry in enumerate(reversed(dims)):
                for j, dim in enumerate(DIMENSIONS):
                    y_bar = i + (len(DIMENSIONS) - 1 - j) * step
                    value = float(entry.dimensions[dim])
                    ax2.barh(
                        y_bar,
                        value,
                        height=step * 0.9,
                        color=DIMENSION_COLOURS[j],
                        alpha=1.0 if entry.ours else 0.4,  # published: the same colours, paler
                    )
                    ax2.text(value + 0.4, y_bar, f"{value:.1f}", va="center", fontsize=7)
                yticks.append(i + (len(DIMENSIONS) - 1) * step / 2)
                ylabels.append(_label(entry, notes, width=24))
            ax2.set_yticks(yticks)
            ax2.set_yticklabels(ylabels, fontsize=8)
            for tick, entry in zip(ax2.get_yticklabels(), list(reversed(dims)), strict=True):
                if entry.ours:
                    tick.set_fontweight("bold")
                    tick.set_color(OURS_COLOUR)
            ax2.axvline(50, color="black", linestyle="--", linewidth=0.8)
            # a group takes at most ~1.6 inches: few groups in a tall chart sit at the top
            rows = max(len(dims), (height_px / dpi - footer_in) / 1.6)
            ax2.set_ylim(len(dims) - 0.1 - rows, len(dims) - 0.1)
            top = max(float(v) for e in dims for v in e.dimensions.values())
            ax2.set_xlim(0, max(60.0, top + 8))
            ax2.set_xlabel("RACE per dimension, 0-100")
            ax2.set_title("By dimension", loc="left", fontsize=10)
            ax2.grid(axis="x", alpha=0.3)
            ax2.set_axisbelow(True)
            handles += [
                Patch(color=c, label=SHORT[d]) for c, d in zip(DIMENSION_COLOURS, DIMENSIONS, strict=True)
            ]
            footer.insert(0, "By dimension: our runs in full colour, the best published system paler.")

        top = footer_frac - 0.1 / (height_px / dpi)
        legend = fig.legend(
            handles=handles,
            loc="upper right",
            bbox_to_anchor=(0.995, top),
            fontsize=8,
            ncol=math.ceil(len(handles) / 2),
            frameon=False,
        )
        legend.set_in_layout(False)
        if footer:
            text = fig.text(0.005, top, "\n".join(footer), fontsize=7, va="top", ha="left")
            text.set_in_layout(False)
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=dpi, format="png")
    finally:
        plt.close(fig)
    return out


def _short_source(text: str, width: int = 150) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


# --- the report ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportPaths:
    markdown: Path
    html: Path
    chart: Path | None  # None when there was nothing to chart or matplotlib is missing
    chart_problem: str | None = None  # why there is no chart


def _source_lines(entries: Sequence[BoardEntry], notes: Mapping[str, int]) -> list[str]:
    """Each footnoted source with the judge(s) its entries name, in footnote order."""
    lines = []
    for text in notes:
        judges = sorted({e.judge for e in entries if e.source == text and e.judge})
        lines.append(f"{text}; judge: {', '.join(judges)}" if judges else text)
    return lines


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _details(entries: Sequence[BoardEntry]) -> list[str]:
    """Per-entry lines for what the table does not show: references and extras of our runs."""
    lines: list[str] = []
    for entry in entries:
        if not entry.ours:
            continue
        bits = [f"mode {entry.mode}"]
        if entry.mode.startswith("race"):
            ref = entry.reference or ("none" if entry.mode == "race-pointwise" else DRB_REFERENCE)
            bits.append(f"reference {'DRB reference articles' if ref == DRB_REFERENCE else ref}")
        if entry.judge:
            bits.append(f"judge {entry.judge}")
        bits += [f"{k} {_fmt_extra(v)}" for k, v in entry.extras.items()]
        lines.append(f"- **{entry.system}**: " + ", ".join(bits))
    return lines


def _fmt_extra(value: Number | str | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def write_report(
    entries: Iterable[BoardEntry],
    out_dir: str | Path,
    *,
    title: str = "ores eval: leaderboard",
    chart: bool = True,
) -> ReportPaths:
    """Write leaderboard.md, leaderboard.html (self-contained: the chart inlined) and
    leaderboard.png into `out_dir`. Without matplotlib (or with `chart=False`) the pages are
    written without the chart and `chart_problem` says why."""
    entries = list(entries)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ordered, rows, notes = board_rows(entries)
    chart_path: Path | None = None
    problem: str | None = None
    if not chart:
        problem = "chart not asked for"
    elif not any(e.overall is not None for e in entries):
        problem = "no entry has a RACE overall score"
    else:
        try:
            chart_path = write_chart(entries, out / CHART_FILE)
        except OresError as exc:
            problem = str(exc)

    legend = _legend(ordered)
    md = [f"# {title}", ""]
    if chart_path is not None:
        md += [f"![RACE overall of our runs and published systems]({chart_path.name})", ""]
    elif problem:
        md += [f"_No chart: {problem}._", ""]
    md += ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    for entry, row in zip(ordered, rows, strict=True):
        cells = [_md_cell(c) for c in row]
        if entry.ours:
            cells[1] = f"**{cells[1]}**"
        md.append("| " + " | ".join(cells) + " |")
    md += ["", *(f"{line}  " for line in legend), ""]
    if details := _details(ordered):
        md += ["## Our runs", "", *details, ""]
    if notes:
        md += ["## Sources of the published numbers", ""]
        md += [f"{n}. {line}" for line, n in zip(_source_lines(ordered, notes), notes.values(), strict=True)]
        md.append("")
    md_path = out / "leaderboard.md"
    md_path.write_text("\n".join(md), encoding="utf-8")

    esc = html.escape
    page = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title>",
        "<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}"
        "table{border-collapse:collapse;font-size:13px}th,td{border:1px solid #ccc;padding:3px 6px}"
        "td.n{text-align:right}tr.ours{font-weight:bold;background:#eaf2fb}img{max-width:100%}"
        ".legend{color:#444;font-size:13px}</style>",
        "</head><body>",
        f"<h1>{esc(title)}</h1>",
    ]
    if chart_path is not None:
        data = base64.b64encode(chart_path.read_bytes()).decode("ascii")
        page.append(
            f'<img alt="RACE overall of our runs and published systems" src="data:image/png;base64,{data}">'
        )
    elif problem:
        page.append(f"<p><em>No chart: {esc(problem)}.</em></p>")
    numeric = {"#", "RACE", "C.Acc %", "E.Cit", "quality", "cost $", *SHORT.values()}
    page.append(
        "<table><thead><tr>" + "".join(f"<th>{esc(c)}</th>" for c in COLUMNS) + "</tr></thead><tbody>"
    )
    for entry, row in zip(ordered, rows, strict=True):
        cls = ' class="ours"' if entry.ours else ""
        tds = "".join(
            f"<td{' class=n' if col in numeric else ''}>{esc(cell)}</td>"
            for col, cell in zip(COLUMNS, row, strict=True)
        )
        page.append(f"<tr{cls}>{tds}</tr>")
    page.append("</tbody></table>")
    page.append('<p class="legend">' + "<br>".join(esc(line) for line in legend) + "</p>")
    if details:
        page.append("<h2>Our runs</h2><ul>")
        for entry in ordered:
            if entry.ours:
                line = _details([entry])[0].removeprefix(f"- **{entry.system}**: ")
                page.append(f"<li><b>{esc(entry.system)}</b>: {esc(line)}</li>")
        page.append("</ul>")
    if notes:
        page.append("<h2>Sources of the published numbers</h2><ol>")
        page += [f"<li>{esc(line)}</li>" for line in _source_lines(ordered, notes)]
        page.append("</ol>")
    page.append("</body></html>")
    html_path = out / "leaderboard.html"
    html_path.write_text("\n".join(page), encoding="utf-8")
    return ReportPaths(md_path, html_path, chart_path, problem)
