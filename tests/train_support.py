"""Tiny training models built inside the tests, no hub: a Qwen2-style tokenizer and model, and
traces to train on.

`qwen2_style(out)` trains a byte-level BPE tokenizer (Qwen2's pre-tokenizer family, ChatML
special tokens and chat template) on a few hundred lines of trace text, and saves a random
2-layer Qwen2 (hidden 64) beside it: a few seconds on a CPU. SmolLM2's own tokenizer comes from
the embedded model (`model_support.tiny_model` uses it with a tiny random Llama).
"""

from __future__ import annotations

import json
from pathlib import Path

from model_support import run_python

FIXTURES = Path(__file__).parent / "fixtures"

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

_BUILD_QWEN2 = """
import json, sys
from pathlib import Path
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM
texts_file, out, template = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
texts = json.loads(texts_file.read_text())
special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
tok = Tokenizer(models.BPE())
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.decoder = decoders.ByteLevel()
trainer = trainers.BpeTrainer(vocab_size=1200, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
tok.train_from_iterator(texts, trainer)
fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None)
fast.chat_template = template
fast.save_pretrained(out)
config = Qwen2Config(
    vocab_size=len(fast), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=8192, tie_word_embeddings=True,
    eos_token_id=fast.convert_tokens_to_ids("<|im_end|>"), pad_token_id=fast.convert_tokens_to_ids("<|endoftext|>"),
)
torch.manual_seed(0)
Qwen2ForCausalLM(config).save_pretrained(out)
"""


def training_texts() -> list[str]:
    """Text to train the tokenizer on: the example trace and the agent prompts, so tags and
    English words get merges of their own, as in a real tokenizer."""
    from oresearch_cli.agent.protocol import system_prompt

    example = Path(__file__).parents[2] / "shared" / "examples" / "trace_example.txt"
    texts = [system_prompt("en"), system_prompt("zh")]
    if example.exists():
        texts += example.read_text(encoding="utf-8").splitlines()
    for path in sorted(FIXTURES.glob("*.txt")):
        texts += path.read_text(encoding="utf-8").splitlines()
    return [t for t in texts if t.strip()] * 3


def qwen2_style(out: Path) -> Path:
    """A tiny random Qwen2 with a locally trained ChatML byte-level BPE tokenizer, in `out`."""
    if (out / "model.safetensors").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    texts = out.parent / f"{out.name}-texts.json"
    texts.write_text(json.dumps(training_texts()), encoding="utf-8")
    run_python(_BUILD_QWEN2, texts, out, CHATML, timeout=300)
    return out
