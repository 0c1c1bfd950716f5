"""What `ores eval` shows: the leaderboard (ours next to published DRB numbers) and judge agreement.

Nothing here calls a model: the eval stage scores runs (scoring/) and hands the numbers over.
matplotlib (the chart) and scipy (rank correlations) are imported only when used.
"""

from oresearch_cli.evaluation.agreement import (
    MIN_ITEMS,
    OVERALL,
    STAND_IN_RHO,
    Agreement,
    Correlation,
    ScoreAgreement,
    compare_scores,
    correlations,
    judge_agreement,
)
from oresearch_cli.evaluation.board import (
    DRB_REFERENCE,
    KINDS,
    MODES,
    BoardEntry,
    ReportPaths,
    board_rows,
    board_table,
    chart_size,
    default_published_path,
    load_published,
    sort_entries,
    write_chart,
    write_report,
)

__all__ = [
    "DRB_REFERENCE",
    "KINDS",
    "MIN_ITEMS",
    "MODES",
    "OVERALL",
    "STAND_IN_RHO",
    "Agreement",
    "BoardEntry",
    "Correlation",
    "ReportPaths",
    "ScoreAgreement",
    "board_rows",
    "board_table",
    "chart_size",
    "compare_scores",
    "correlations",
    "default_published_path",
    "judge_agreement",
    "load_published",
    "sort_entries",
    "write_chart",
    "write_report",
]
