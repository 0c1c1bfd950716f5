#!/usr/bin/env bash
# `make learn-rl`: does agentic GRPO improve the SFT'd SmolLM2 of `make learn-sft`?
#
#   1. the embedded SmolLM2-135M-Instruct is served on the CPU as the judge (R_base);
#   2. `ores rl --recipe recipes/rl/smollm2-cpu.yaml`: GRPO from models/smollm2-135m-sft, each
#      step one training question researched 4 times by the policy with real tool calls
#      against the offline Wikipedia corpus, scored 0.6 R_base + 0.2 R_tool + 0.2 R_format;
#   3. the RL model answers the same 32 held-out questions as learn-sft's base and SFT models
#      (scripts/learn_sft_eval.py, label rl);
#   4. scripts/learn_rl_report.py scores the SFT and RL answers with the three rewards (the same
#      judge) and draws each component's curve over the training steps (learn-ws/learn/rl-curves.png).
#
# Needs `make learn-sft` first (its workspace and model). Every stage resumes after a Ctrl-C.
# About 2.5 hours on 2 CPU cores (~9 minutes a GRPO step). ORES_WS (default learn-ws) is the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
ORES=".venv/bin/ores"
PY=".venv/bin/python"
export ORES_WS="${ORES_WS:-learn-ws}"
PORT="${ORES_LEARN_PORT:-8777}"
if [ ! -d "$ORES_WS/models/smollm2-135m-sft" ]; then
    echo "learn_rl.sh: no $ORES_WS/models/smollm2-135m-sft; run \`make learn-sft\` first" >&2
    exit 2
fi

echo "== 1. the judge: the embedded SmolLM2, served"
source scripts/serve_embedded.sh
start_embedded_server "$PORT" "$ORES_WS/serve-judge.log"

echo "== 2. rl: GRPO with real tool calls, rewards 0.6 base + 0.2 tool + 0.2 format"
# ORES_RL_ARGS adds flags, e.g. "--max-train-seconds 3600": the run stops and saves after an
# hour and a rerun resumes it from there.
# shellcheck disable=SC2086
$ORES rl --recipe recipes/rl/smollm2-cpu.yaml ${ORES_RL_ARGS:-}

echo "== 3. held-out questions, the RL model writing the whole trace with real tool calls"
$PY scripts/learn_sft_eval.py run --ws "$ORES_WS" --model smollm2-135m-rl --label rl

echo "== 4. the three rewards on the SFT and RL answers, and the training curves"
$PY scripts/learn_rl_report.py --ws "$ORES_WS" --config recipes/rl/smollm2-cpu.yaml
