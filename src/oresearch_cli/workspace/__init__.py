"""The workspace: a DuckDB catalog of runs and artifacts, with Parquet/JSONL files beside it.

Public API: `Workspace.open(path)`, `Workspace.start_run(...) -> Run`, `Run.append/finish`,
`Workspace.latest_artifact(kind)`, `Workspace.sql(query)`, `Workspace.status()`.
"""

from oresearch_cli.workspace.catalog import SCHEMA_VERSION
from oresearch_cli.workspace.models import ArtifactInfo, KindStatus, RunInfo, WorkspaceStatus, config_hash
from oresearch_cli.workspace.run import ITEM_DONE, ITEM_FAILED, Run
from oresearch_cli.workspace.workspace import CATALOG_NAME, Workspace

__all__ = [
    "CATALOG_NAME",
    "ITEM_DONE",
    "ITEM_FAILED",
    "SCHEMA_VERSION",
    "ArtifactInfo",
    "KindStatus",
    "Run",
    "RunInfo",
    "Workspace",
    "WorkspaceStatus",
    "config_hash",
]
