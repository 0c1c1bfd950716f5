"""A tiny Llama that has learned to be the LLM judge of `ores filter`, served by a real `ores serve`.

    def test_something(judge_server):
        base_url, model_name = judge_server

The random tiny Llama of `model_support` never writes valid JSON, so a test of the judge through a
real model could only ever see the malformed-output path. This one is that same checkpoint (same
config, seeded weights, SmolLM2's tokenizer and chat template) trained once per test session, in a
subprocess with plain torch, to answer the judge's real prompt (`build_messages` over traces made
by `filter_support.traces_file`, rendered by the chat template) with `JUDGE_ANSWER`: all six
criteria, integer scores and one-sentence reasons. Loss is on the answer tokens only; training
stops once greedy decoding is right at every answer token with a margin, and the script checks
that `generate` reproduces the answer before it saves (safetensors): 77 steps, ~17 s of training,
~28 s with loading and the check on 2 busy CPU cores (seeded, one thread: the same run every time).
Served greedily (temperature 0), the model gives that answer to those prompts.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

from filter_support import traces_file
from model_support import embedded_ws, run_python, serving, tiny_model

JUDGE_NAME = "tiny-judge-llama"
JUDGE_MAX_CHARS = 1500  # `filter.judge.max_chars` of the test that uses it: the prompts trained on
# What the judge says, to every trace: citation_support under the default floor of 4 (a definite
# rejection with one reason code), everything else and the mean (7.17) well above theirs.
JUDGE_SCORES: dict[str, dict[str, int | str]] = {
    "comprehensiveness": {"score": 8, "reason": "Covers both stages and what each produces."},
    "depth": {"score": 7, "reason": "Explains the mechanisms with few numbers."},
    "faithfulness": {"score": 8, "reason": "Its claims match the pages it read."},
    "citation_support": {"score": 3, "reason": "Most citations do not back their claims."},
    "instruction_following": {"score": 9, "reason": "Answers the question in the report format."},
    "readability": {"score": 8, "reason": "Clear sections without repetition."},
}
JUDGE_ANSWER = json.dumps(JUDGE_SCORES)
TRAINED_ON = 2  # traces g0, g1 of `traces_file`

# Run in a subprocess, so the test process never imports torch. One thread: on 2 shared cores a
# second one makes each step slower, not faster. Gradient clipping keeps lr 5e-3 stable.
_TRAIN_JUDGE = """
import json, sys, time
from pathlib import Path
import torch
from transformers import AutoTokenizer, LlamaForCausalLM
source, data, out = Path(sys.argv[1]), json.loads(Path(sys.argv[2]).read_text()), Path(sys.argv[3])
torch.set_num_threads(1)
torch.manual_seed(0)
tokenizer = AutoTokenizer.from_pretrained(source)
model = LlamaForCausalLM.from_pretrained(source)
answer = tokenizer(data["answer"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
prompts = [
    list(tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=True, return_dict=False))
    for m in data["prompts"]
]
target = torch.tensor(answer)
optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=0.0)
margins = [float("-inf")] * len(prompts)
started = time.monotonic()
model.train()
for step in range(1, data["max_steps"] + 1):
    k = step % len(prompts)
    ids = torch.tensor([prompts[k] + answer])
    hidden = model.model(input_ids=ids).last_hidden_state[0, len(prompts[k]) - 1 : -1]
    logits = model.lm_head(hidden)  # at the answer's positions only
    loss = torch.nn.functional.cross_entropy(logits, target)
    with torch.no_grad():  # how far each answer token's logit leads the best other one
        right = logits.gather(1, target[:, None])[:, 0]
        margins[k] = (right - logits.scatter(1, target[:, None], float("-inf")).max(1).values).min().item()
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    if min(margins) > data["margin"]:
        break
else:
    sys.exit(f"not learned in {step} steps: loss {loss.item():.4f}, margins {margins}")
seconds = time.monotonic() - started
model.eval()
for prompt in prompts:
    with torch.no_grad():
        made = model.generate(torch.tensor([prompt]), max_new_tokens=len(answer) + 8, do_sample=False)
    text = tokenizer.decode(made[0, len(prompt):], skip_special_tokens=True)
    if text != data["answer"]:
        sys.exit(f"greedy decoding gives {text!r}, not the answer")
model.save_pretrained(out)  # model.safetensors
tokenizer.save_pretrained(out)
stats = {"steps": step, "seconds": round(seconds, 1), "loss": round(loss.item(), 4), "margin": min(margins)}
(out / "training.json").write_text(json.dumps(stats))
print(json.dumps(stats))
"""


def judge_prompts(max_chars: int = JUDGE_MAX_CHARS, n: int = TRAINED_ON) -> list[list[dict[str, str]]]:
    """The judge's messages for traces g0.. of `traces_file`, as `ores filter` builds them."""
    from oresearch_cli.filtering.config import FilterConfig
    from oresearch_cli.filtering.judge import build_messages
    from oresearch_cli.filtering.rules import Item, run_rules

    with tempfile.TemporaryDirectory() as tmp:
        path = traces_file(Path(tmp) / "t.jsonl", n_good=n, broken=False)
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    items = [Item(id=r["id"], text=r["trace"], question=r["question"], language=r["language"]) for r in rows]
    outcomes = run_rules(items, FilterConfig())
    return [
        build_messages(i.question, i.text, o.report, max_chars) for i, o in zip(items, outcomes, strict=True)
    ]


def judge_model(ws: Path) -> Path:
    """The trained judge checkpoint in `ws`'s models/ (trained once from `tiny_model`)."""
    out = ws / "models" / JUDGE_NAME
    if not (out / "model.safetensors").exists():
        source = tiny_model(ws)
        data = {"prompts": judge_prompts(), "answer": JUDGE_ANSWER, "max_steps": 400, "margin": 3.0}
        spec = ws / f"{JUDGE_NAME}-training.json"
        spec.write_text(json.dumps(data))
        partial = out.with_name(JUDGE_NAME + ".partial")  # a failed run leaves no checkpoint behind
        run_python(_TRAIN_JUDGE, source, spec, partial, timeout=600)
        partial.rename(out)
    return out


@pytest.fixture(scope="session")
def judge_server(tmp_path_factory: pytest.TempPathFactory):
    """(base_url, model_name) of one `ores serve --model` of the trained tiny judge, for the session."""
    ws = embedded_ws(tmp_path_factory)
    with serving(ws, judge_model(ws)) as served:
        yield served
