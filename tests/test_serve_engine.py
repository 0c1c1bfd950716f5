"""The batching engine decodes exactly as transformers' own `generate` does, one request or many.

Greedy decoding of the tiny random Llama is deterministic, so the engine's text must equal
`model.generate`'s for each prompt, whether the request runs alone or joins a batch of requests
with other prompt lengths mid-way (left padding, per-row positions, rows leaving the batch). Run
in a subprocess: the test process never imports torch.
"""

from __future__ import annotations

import json

import pytest

from model_support import embedded_ws, run_python, tiny_model

_COMPARE = r"""
import asyncio, json, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from oresearch_cli.server.engine import Delta, Engine, GenerationRequest, SamplingParams

path = sys.argv[1]
tokenizer = AutoTokenizer.from_pretrained(path)
model = AutoModelForCausalLM.from_pretrained(path).eval()
prompts = ["Why do rivers flood?", "Name three prime numbers and explain why each one is prime, briefly.",
           "Hi", "Write about forests, carbon, rain and the climate of South America in detail."]
lengths = [40, 12, 55, 30]  # rows finish at different steps and leave the batch
encoded = [tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
           tokenize=True) for p in prompts]
encoded = [list(e["input_ids"]) if hasattr(e, "keys") else list(e) for e in encoded]

reference = []
with torch.inference_mode():
    for ids, n in zip(encoded, lengths):
        out = model.generate(torch.tensor([ids]), max_new_tokens=n, min_new_tokens=n, do_sample=False)
        reference.append(tokenizer.decode(out[0][len(ids):], skip_special_tokens=True))

async def run(stagger):
    engine = Engine(model, tokenizer, max_batch=8)
    engine.start()
    requests, first = [], {}
    for ids, n in zip(encoded, lengths):
        request = GenerationRequest(ids, SamplingParams(max_tokens=n, temperature=0))
        requests.append(request)
        engine.submit(request)
        if stagger:  # the next row joins once this one is decoding: a running batch, whatever the speed
            first[id(request)] = await request.events.get()
    texts = []
    for request in requests:
        early = first.get(id(request))
        if early is not None and not isinstance(early, Delta):  # it ended on its first token
            texts.append("")
            continue
        parts = [early.text] if early is not None else []
        while True:
            event = await request.events.get()
            if isinstance(event, Delta):
                parts.append(event.text)
            else:
                break
        texts.append("".join(parts))
    batch = engine.stats.max_batch_seen
    engine.stop()
    return texts, batch

together, batch = asyncio.run(run(stagger=False))
staggered, batch2 = asyncio.run(run(stagger=True))
print(json.dumps({"reference": reference, "together": together, "staggered": staggered,
                  "batch": batch, "batch_staggered": batch2}))
"""


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    ws = embedded_ws(tmp_path_factory)
    return json.loads(run_python(_COMPARE, tiny_model(ws), timeout=600).strip().splitlines()[-1])


def test_batched_greedy_decoding_equals_generate(compared):
    assert compared["batch"] > 1 and compared["batch_staggered"] > 1  # rows really shared steps
    assert compared["together"] == compared["reference"]
    assert compared["staggered"] == compared["reference"]
    assert all(compared["reference"])  # the comparison is over real text
