"""`ores sft` end to end through the real CLI, on a tiny Qwen2 with a tokenizer trained here.

Training runs on TRL's SFTTrainer in a subprocess (the test process never imports torch): the
loss falls, the run lands in the catalog, full and LoRA runs save checkpoints that load, a run
killed with SIGKILL resumes from its last checkpoint, and every bad input is one line and exit 2.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import ores, ores_forked
from filter_support import traces_file, write_jsonl
from model_support import run_python, serving, skip_without_local_stack
from train_support import qwen2_style

pytestmark = pytest.mark.timeout(600)

# Small steps on a tiny model: one example per step, no warmup, a learning rate that moves it.
RECIPE = """
sft:
  gradient_accumulation_steps: 1
  warmup_steps: 0
  learning_rate: 3.0e-3
  lr_scheduler_type: constant
  max_length: 4096
  activation_checkpointing: false
  ores:
    eval_split: 0.2
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Path:
    skip_without_local_stack()
    root = tmp_path_factory.mktemp("sft")
    qwen2_style(root / "tiny-qwen2")
    traces_file(root / "traces.jsonl", n_good=8, broken=False)
    (root / "recipe.yaml").write_text(RECIPE, encoding="utf-8")
    return root


def sft(root: Path, *args: str, ws: str = "ws", timeout: float = 400) -> subprocess.CompletedProcess[str]:
    return ores(
        "sft", "traces.jsonl", "--recipe", "recipe.yaml", "--model", "tiny-qwen2", "--ws", ws, *args,
        cwd=root, timeout=timeout, env={"OMP_NUM_THREADS": "1"},
    )  # fmt: skip


def models_rows(root: Path, ws: str) -> list[dict]:
    done = ores("ws", "sql", "select * from models_all", "--json", "--ws", ws, cwd=root)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


_LOAD = r"""
import json, sys
from transformers import AutoModelForCausalLM, AutoTokenizer
final, checkpoint, lora = sys.argv[1], sys.argv[2], sys.argv[3] == "lora"
model = AutoModelForCausalLM.from_pretrained(final)
tokenizer = AutoTokenizer.from_pretrained(final)
if lora:
    from peft import PeftModel
    resumed = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(final), checkpoint)
else:
    resumed = AutoModelForCausalLM.from_pretrained(checkpoint)
print(json.dumps({"params": sum(p.numel() for p in model.parameters()), "template": bool(tokenizer.chat_template),
                  "checkpoint_params": sum(p.numel() for p in resumed.parameters())}))
"""


# LoRA is in the slow tier (~35 s): it shares all but the adapter and its loading with the full run.
@pytest.mark.parametrize("method", ["full", pytest.param("lora", marks=pytest.mark.slow)])
def test_sft_trains_registers_and_saves_loadable_checkpoints(setup: Path, method: str) -> None:
    ws = f"ws-{method}"
    extra = ["--lora-r", "8"] if method == "lora" else []
    done = sft(setup, "--max-steps", "8", "--save-steps", "4", *extra, ws=ws)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    # One progress line per logging step when not on a terminal.
    assert "sft step 8/8" in done.stderr
    (row,) = models_rows(setup, ws)
    assert row["method"] == method and row["steps"] == 8
    assert row["n_train"] + row["n_eval"] == 8 and row["n_eval"] >= 1
    assert row["tokens_seen"] > 0 and row["trained_tokens"] < row["train_tokens"]
    assert row["eval_loss"] is not None
    curve = json.loads(row["loss_curve"])
    assert len(curve) == 8
    assert curve[-1][1] < curve[0][1], curve  # the loss falls
    final = setup / ws / row["path"]
    assert json.loads((final / "ores-sft.json").read_text())["protocol"] == "single"
    loaded = json.loads(run_python(_LOAD, final, final / "checkpoints" / "checkpoint-8", method, timeout=120))
    assert loaded["template"] and loaded["params"] > 0
    if method == "full":
        assert loaded["checkpoint_params"] == loaded["params"]
    else:
        assert loaded["checkpoint_params"] > loaded["params"]  # the adapter's weights on top
    examples = ores("ws", "sql", "select split, outcome from sft_examples", "--json", "--ws", ws, cwd=setup)
    outcomes = json.loads(examples.stdout)
    assert len(outcomes) == 8 and {o["outcome"] for o in outcomes} == {"kept"}
    if method == "full":
        served_with_the_training_prompt(setup / ws, row["run_id"], setup / "tiny-qwen2")
    # The same config again: nothing to do, nothing overwritten.
    again = sft(setup, "--max-steps", "8", "--save-steps", "4", *extra, ws=ws)
    assert again.returncode == 0 and "already trained" in again.stderr
    assert len(models_rows(setup, ws)) == 1


_PROMPT_LEN = r"""
import sys
from transformers import AutoTokenizer
from oresearch_cli.agent.protocol import messages
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
print(len(tokenizer.apply_chat_template(messages(sys.argv[2]), add_generation_prompt=True, tokenize=True)["input_ids"]))
"""


def served_with_the_training_prompt(ws: Path, run_id: str, base: Path) -> None:
    """`ores serve --model <sft run id>` serves the trained model, and a client that sends only
    the question gets it prompted with the protocol's system prompt, as in training."""
    question = "What is photosynthesis?"
    with serving(ws, Path(run_id)) as (base_url, model_name):
        reply = httpx.post(
            f"{base_url}/chat/completions",
            json={"model": model_name, "messages": [{"role": "user", "content": question}], "max_tokens": 2},
            timeout=60,
        )
    assert reply.status_code == 200, reply.text
    expected = int(run_python(_PROMPT_LEN, base, question, timeout=60).strip())
    assert reply.json()["usage"]["prompt_tokens"] == expected


def test_a_killed_run_resumes_from_its_last_checkpoint(setup: Path) -> None:
    args = [sys.executable, "-m", "oresearch_cli", "sft", "traces.jsonl", "--recipe", "recipe.yaml",
            "--model", "tiny-qwen2", "--ws", "ws-kill", "--max-steps", "40", "--save-steps", "3"]  # fmt: skip
    child = subprocess.Popen(args, cwd=setup, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    models = setup / "ws-kill" / "models"
    while time.monotonic() < deadline and not list(
        models.glob("sft-*/checkpoints/checkpoint-6/trainer_state.json")
    ):
        assert child.poll() is None, child.stderr.read() if child.stderr else ""
        time.sleep(0.2)
    time.sleep(0.5)
    child.send_signal(signal.SIGKILL)
    child.wait()
    (folder,) = models.glob("sft-*")
    assert not (folder / "config.json").exists()  # it never finished
    # Make the newest checkpoint one whose save was cut off, as a kill during a save leaves it.
    newest = max((folder / "checkpoints").glob("checkpoint-*"), key=lambda path: int(path.name.split("-")[1]))
    (newest / "trainer_state.json").unlink(missing_ok=True)
    done = ores(*args[3:], cwd=setup, timeout=400, env={"OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming the interrupted run" in done.stderr
    assert f"{newest.name} was cut off while saving" in done.stderr
    assert "resumed from checkpoint-" in done.stderr
    (row,) = models_rows(setup, "ws-kill")
    assert row["steps"] == 40 and row["resumed_from"].startswith("checkpoint-")
    steps = [step for step, _ in json.loads(row["loss_curve"])]
    assert steps == list(range(1, 41))  # the curve from before the kill is kept, no step twice


def test_packing_runs_through_trl(setup: Path) -> None:
    done = sft(setup, "--packing", "--max-steps", "2", "--max-length", "2048", ws="ws-packed")
    assert done.returncode == 0, done.stderr[-3000:]
    (row,) = models_rows(setup, "ws-packed")
    assert row["steps"] == 2 and row["tokens_seen"] > 0
    assert json.loads(row["loss_curve"])[0][1] > 0


def _one_line_error(done: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_bad_inputs_are_one_line_and_exit_2(setup: Path) -> None:
    write_jsonl(setup / "answers.jsonl", [{"question": "q?", "answer": "a"}])
    (setup / "typo.yaml").write_text("sft:\n  learning_rat: 1.0e-4\n", encoding="utf-8")
    # An output folder that holds something else is refused, and left as it was.
    other = setup / "ws-bad" / "models" / "taken"
    other.mkdir(parents=True)
    (other / "notes.txt").write_text("mine", encoding="utf-8")
    base = ("sft", "traces.jsonl", "--recipe", "recipe.yaml", "--model", "tiny-qwen2", "--ws", "ws-bad")
    cases: list[tuple[tuple[str, ...], tuple[str, ...]]] = [
        (("sft", "answers.jsonl", "--model", "tiny-qwen2", "--ws", "ws-bad"), ("answers.jsonl", "--field")),
        (
            ("sft", "traces.jsonl", "--recipe", "typo.yaml", "--ws", "ws-bad"),
            ("typo.yaml", "learning_rat", "learning_rate"),
        ),
        ((*base, "--max-length", "64"), ("--max-length 64", "raise --max-length")),
        (("sft", "traces.jsonl", "--model", "./no/such/model", "--ws", "ws-bad"), ("./no/such/model",)),
        (("sft", "--ws", "ws-empty", "--model", "tiny-qwen2"), ("ws-empty",)),
        ((*base, "--report-to", "no-such-tracker"), ("no-such-tracker", "--report-to none")),
        ((*base, "--name", "taken"), ("taken", "--name")),
    ]
    runs = ores_forked(*(args for args, _ in cases), cwd=setup, env={"OMP_NUM_THREADS": "1"})
    for done, (_, needles) in zip(runs, cases, strict=True):
        _one_line_error(done, *needles)
    assert (other / "notes.txt").read_text() == "mine"


def test_the_accepted_set_is_the_default_input(setup: Path) -> None:
    filtered = ores("filter", "traces.jsonl", "--no-judge", "--ws", "ws-acc", cwd=setup)
    assert filtered.returncode == 0, filtered.stderr
    exported = ores("export", "exported", "--ws", "ws-acc", cwd=setup)
    assert exported.returncode == 0, exported.stderr
    # Nothing accepted: the filter rejected everything, so there is nothing to train on.
    write_jsonl(setup / "bad.jsonl", [{"id": "x", "question": "q?", "trace": "no tags at all"}])
    assert ores("filter", "bad.jsonl", "--no-judge", "--ws", "ws-none", cwd=setup).returncode == 0
    dry = ("--model", "tiny-qwen2", "--ws", "ws-acc", "--dry-run")
    default, from_export, from_stdin, nothing = ores_forked(
        ("sft", *dry, "--recipe", "recipe.yaml"),
        # The same traces through an `ores export` directory and through stdin.
        ("sft", "exported", *dry),
        (("sft", "-", *dry), (setup / "traces.jsonl").read_text()),
        ("sft", "--model", "tiny-qwen2", "--ws", "ws-none"),
        cwd=setup,
    )
    assert default.returncode == 0, default.stderr[-2000:]
    assert "traces from filter-" in default.stderr and "resolved sft config" in default.stderr
    assert not list((setup / "ws-acc" / "models").glob("sft-*"))  # a dry run trains nothing
    for done in (from_export, from_stdin):
        assert done.returncode == 0, done.stderr[-2000:]
        assert "8 traces from" in done.stderr
    _one_line_error(nothing, "no accepted traces", "loosen the filter")
