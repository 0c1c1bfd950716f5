"""The parts of `ores filter`: hard rules (`rules`), their settings (`config`), near-duplicate
removal (`dedup`), the LLM judge (`judge`) and the funnel table (`funnel`). The stage that runs
them over a workspace lives in `oresearch_cli.stages.filter`."""
