"""The workspace: a DuckDB catalog of runs and artifacts, with Parquet/JSONL files beside it, and
the stage contract every stage runs on.

    ws = Workspace.open(path)
    with ws.start_run(StageSpec.of("synth", TraceRecord), config, inputs, resume=True) as run:
        run.append(record); run.open_log("llm_calls"); run.progress.advance()
    ws.latest_artifact(kind); ws.sql(query); ws.status()

Only this package writes catalog SQL. Record classes (`ArtifactRecord`) type each artifact kind;
`Status` and `RunStatus` are the one set of status values.
"""

from oresearch_cli.workspace.catalog import SCHEMA_VERSION
from oresearch_cli.workspace.models import ArtifactInfo, KindStatus, RunInfo, WorkspaceStatus, config_hash
from oresearch_cli.workspace.progress import NoProgress, Progress
from oresearch_cli.workspace.records import ArtifactRecord, RunStatus, Status, record_type
from oresearch_cli.workspace.run import RunContext, StageSpec, iter_source
from oresearch_cli.workspace.workspace import CATALOG_NAME, Workspace

__all__ = [
    "CATALOG_NAME",
    "SCHEMA_VERSION",
    "ArtifactInfo",
    "ArtifactRecord",
    "KindStatus",
    "NoProgress",
    "Progress",
    "RunContext",
    "RunInfo",
    "RunStatus",
    "StageSpec",
    "Status",
    "Workspace",
    "WorkspaceStatus",
    "config_hash",
    "iter_source",
    "record_type",
]
