"""`LockstepEngine`: multi-turn generation on ranks whose every forward pass is a collective.

Two real processes (torch.distributed, gloo) each run a tiny Qwen2 whose forward pass starts with
an all-reduce, as DeepSpeed ZeRO-3 all-gathers each layer's shards: the k-th forward pass of one
rank must meet the k-th of the other, or the run hangs or pairs the wrong collectives. Rank 0
researches three multi-turn episodes with pauses for "tools" in between, rank 1 a single short
turn. With the lockstep engine both finish, every forward pass met its partner (each all-reduce
carries its index, and the sum must be twice it), and rank 1 ran dummy passes for rank 0's sake.
The plain `Engine` in the same setting falls out of step, which the test also shows: the
collective check is one that can fail. The whole-stack run is tests/test_train_zero3_rl.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from model_support import free_port, skip_without_local_stack
from train_support import qwen2_style

pytestmark = pytest.mark.timeout(300)

_RANK = r"""
import asyncio, datetime, json, os, sys
import torch, torch.distributed as dist
from transformers import AutoModelForCausalLM, AutoTokenizer
from oresearch_cli.server.engine import Done, Engine, GenerationRequest, SamplingParams
from oresearch_cli.train.lockstep import LockstepEngine

model_dir, out_dir, which = sys.argv[1], sys.argv[2], sys.argv[3]
rank = int(os.environ["RANK"])
dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=10))
torch.manual_seed(0)
model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
tokenizer = AutoTokenizer.from_pretrained(model_dir)
meetings = {"passes": 0, "out_of_step": 0}

def collective_forward(module, args, kwargs):
    # what ZeRO-3 does at each layer: a collective every rank must join; it carries its index
    index = meetings["passes"]
    meetings["passes"] += 1
    probe = torch.tensor([index, 1, 0], dtype=torch.long)
    dist.all_reduce(probe)
    if int(probe[0]) != 2 * index:
        meetings["out_of_step"] += 1

model.register_forward_pre_hook(collective_forward, with_kwargs=True)
engine = (LockstepEngine if which == "lockstep" else Engine)(model, tokenizer, max_batch=4)
engine.start()

async def turn(prompt, max_tokens):
    request = GenerationRequest(prompt, SamplingParams(max_tokens=max_tokens, temperature=0.0))
    engine.submit(request)
    while True:
        event = await request.events.get()
        if isinstance(event, Done):
            if event.finish_reason == "error":
                raise RuntimeError(event.error)
            return event

async def episode(turns, max_tokens):
    prompt = tokenizer("Photosynthesis converts light", add_special_tokens=False)["input_ids"]
    reasons = []
    for _ in range(turns):
        done = await turn(prompt, max_tokens)
        reasons.append(done.finish_reason)
        prompt = prompt + list(done.token_ids) + prompt[:3]  # the "observation" appended
        await asyncio.sleep(0.05)  # the tool call
    return reasons

async def main():
    if rank == 0:
        return await asyncio.gather(*(episode(3, 10 + 3 * i) for i in range(3)))
    return await asyncio.gather(episode(1, 3))

try:
    result = {"reasons": asyncio.run(main())}
    engine.stop(timeout=30)
except Exception as exc:  # the ranks fell out of step: a collective failed
    result = {"error": str(exc)[:300]}
result.update(meetings, idle_passes=getattr(engine, "idle_passes", 0))
with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as fh:
    json.dump(result, fh)
os._exit(0)  # a broken process group can hang the interpreter's teardown
"""


def _run_two_ranks(tmp_path: Path, model: Path, which: str) -> list[dict]:
    script = tmp_path / "rank.py"
    script.write_text(_RANK, encoding="utf-8")
    out = tmp_path / which
    out.mkdir()
    port = str(free_port())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RANK", "WORLD_SIZE", "MASTER_"))}
    env.update({"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "OMP_NUM_THREADS": "1"})
    ranks = [
        subprocess.Popen(
            [sys.executable, str(script), str(model), str(out), which],
            env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in (0, 1)
    ]
    for rank in ranks:
        rank.communicate(timeout=120)
    return [
        json.loads(f.read_text(encoding="utf-8")) if (f := out / f"rank{r}.json").exists() else {}
        for r in (0, 1)
    ]


def test_every_forward_pass_meets_its_partner_on_the_other_rank(tmp_path: Path) -> None:
    skip_without_local_stack()
    model = qwen2_style(tmp_path / "tiny-qwen2")

    rank0, rank1 = _run_two_ranks(tmp_path, model, "lockstep")
    assert rank0 and rank1, "a rank did not finish"
    assert "error" not in rank0 and "error" not in rank1, (rank0, rank1)
    assert len(rank0["reasons"]) == 3 and all(len(r) == 3 for r in rank0["reasons"])
    assert all(reason in ("stop", "length") for episode in rank0["reasons"] for reason in episode)
    assert len(rank1["reasons"]) == 1 and rank1["reasons"][0][0] in ("stop", "length")
    assert rank0["out_of_step"] == rank1["out_of_step"] == 0
    assert rank0["passes"] == rank1["passes"] > 9  # 9 prefills on rank 0 alone
    assert rank1["idle_passes"] > 0  # rank 1 stepped for rank 0 long after its own turn

    # The plain engine in the same setting: rank 1 stops stepping after its one turn, and rank 0's
    # later forward passes find no partner (or the wrong one).
    plain0, plain1 = _run_two_ranks(tmp_path, model, "plain")
    assert "error" not in plain1 and plain1["passes"] < rank1["passes"]  # done after its own turn
    assert "error" in plain0 or plain0["out_of_step"] > 0, plain0
