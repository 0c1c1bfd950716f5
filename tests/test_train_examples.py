"""SFT examples: the trained-on tokens are exactly the model's text, never an observation.

The masking test tokenizes a real synthesized trace (the embedded SmolLM2 wrote it in `make demo`)
with SmolLM2's tokenizer and with a Qwen2-style byte-level BPE tokenizer trained here, decodes the
runs of tokens that carry loss and those that do not, and compares them with the trace's model
and observation segments (`trace.convert`). Tokenizers run in a subprocess: the test process
never imports torch.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from oresearch_cli.train.examples import TraceItem, split_items

from model_support import embedded_ws, run_python, tiny_model
from train_support import FIXTURES, qwen2_style

TRACE = json.loads((FIXTURES / "synth_trace_smollm2.json").read_text(encoding="utf-8"))

_RUNS = r"""
import json, sys
from transformers import AutoTokenizer
from oresearch_cli.errors import OresError
from oresearch_cli.train.examples import IGNORE, ChatFormat, Dropped, TraceItem, build_example, segment_spans

path, item = sys.argv[1], json.loads(open(sys.argv[2]).read())
tokenizer = AutoTokenizer.from_pretrained(path)
fmt = ChatFormat(tokenizer)
trace = TraceItem(item["id"], item["question"], item["language"], item["trace"])

def runs(example):
    out, ids, flag = [], [], None
    for token, label in zip(example.input_ids[example.n_prompt:], example.labels[example.n_prompt:]):
        trained = label != IGNORE
        if flag is not None and trained != flag:
            out.append([flag, tokenizer.decode(ids)]); ids = []
        flag = trained; ids.append(token)
    if ids:
        out.append([flag, tokenizer.decode(ids)])
    return out

full = build_example(fmt, trace, 100_000)
prompt_labels = set(full.labels[:full.n_prompt])
prompt_text = tokenizer.decode(full.input_ids[:full.n_prompt])
# Room for the first three segments (model, observation, model) and a little of the fourth:
# truncation must cut after the third, a model span.
three = sum(len(fmt.encode(text)) for text, _ in segment_spans(item["trace"])[:3])
short = build_example(fmt, trace, full.n_prompt + three + 5, "truncate")
dropped = build_example(fmt, trace, full.n_prompt + three + 5, "drop")
no_room = build_example(fmt, trace, full.n_prompt, "truncate")
tokenizer.chat_template = None
try:
    ChatFormat(tokenizer, name="model m")
    no_template = None
except OresError as exc:
    no_template = str(exc)
print(json.dumps({
    "segments": segment_spans(item["trace"]), "end_of_turn": fmt.end_of_turn,
    "runs": runs(full), "prompt_labels": sorted(prompt_labels), "prompt_text": prompt_text,
    "short_runs": runs(short) if not isinstance(short, Dropped) else None,
    "short_truncated": getattr(short, "truncated", None), "short_len": len(getattr(short, "input_ids", [])), "three": three, "n_prompt": full.n_prompt,
    "dropped": getattr(dropped, "reason", None), "no_room": getattr(no_room, "reason", None),
    "no_template": no_template,
}))
"""


@pytest.fixture(scope="module", params=["smollm2", "qwen2-style"])
def tokenizer_path(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    if request.param == "smollm2":
        return tiny_model(embedded_ws(tmp_path_factory))  # SmolLM2's tokenizer and chat template
    return qwen2_style(tmp_path_factory.mktemp("qwen2") / "tiny-qwen2")


@pytest.fixture(scope="module")
def tokenized(tokenizer_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    item = tmp_path_factory.mktemp("item") / "trace.json"
    item.write_text(json.dumps(TRACE), encoding="utf-8")
    return json.loads(run_python(_RUNS, tokenizer_path, item, timeout=300))


def test_trained_tokens_are_exactly_the_models_text(tokenized: dict) -> None:
    segments = [(trainable, text) for text, trainable in tokenized["segments"]]
    runs = [(trained, text) for trained, text in tokenized["runs"]]
    assert any(not trainable for trainable, _ in segments), "the fixture trace has observations"
    # Model segments trained, observation blocks not, in order; the end of turn trained after the report.
    expected = [*segments[:-1], (True, segments[-1][1] + tokenized["end_of_turn"])]
    assert segments[-1][0] is True
    assert runs == expected
    trained_text = "".join(text for trained, text in runs if trained)
    assert "<observation>" not in trained_text and "</observation>" not in trained_text
    for trainable, text in segments:
        if not trainable:
            assert text.startswith("\n<observation>\n") and text.endswith("</observation>")
            assert text not in trained_text  # no observation text carries loss


def test_the_prompt_carries_no_loss_and_holds_the_protocol(tokenized: dict) -> None:
    assert tokenized["prompt_labels"] == [-100]
    assert "<subtask_list>" in tokenized["prompt_text"]  # the single-model system prompt
    assert TRACE["question"] in tokenized["prompt_text"]


def test_overlong_trace_is_cut_after_a_model_turn_or_dropped(tokenized: dict) -> None:
    assert tokenized["short_truncated"] is True
    assert tokenized["short_len"] == tokenized["n_prompt"] + tokenized["three"]
    runs = tokenized["short_runs"]
    assert [trained for trained, _ in runs] == [True, False, True]
    last_trained, last_text = runs[-1]
    assert last_trained is True
    assert last_text.rstrip().endswith(
        ("</web_search>", "</crawl_page>", "</subtask_answer>", "</subtask_list>")
    )
    assert tokenized["end_of_turn"] not in last_text  # a cut example must not learn to stop there
    assert tokenized["dropped"] == "overlong"
    assert tokenized["no_room"] == "prompt-overlong"


def test_a_tokenizer_without_chat_template_is_refused_in_one_line(tokenized: dict) -> None:
    message = tokenized["no_template"]
    assert message.startswith("model m: the tokenizer has no chat template") and "\n" not in message


def _item(i: str, question: str) -> TraceItem:
    return TraceItem(i, question, "en", "<suggested_answer>x</suggested_answer>")


def test_eval_split_keeps_every_question_on_one_side() -> None:
    items = [_item(f"q{i}", f"Question number {i}?") for i in range(40)]
    items += [_item("q3", "Question number 3?"), _item("other-id", "Question number 5?")]  # repeats
    split = split_items(items, 0.1)
    train_q = {it.question for it in split.train}
    eval_q = {it.question for it in split.eval}
    assert not train_q & eval_q
    assert not {it.id for it in split.train} & {it.id for it in split.eval}
    assert 4 <= len(eval_q) <= 5  # ceil(10% of 40 questions)
    assert split_items(items, 0.1).eval == split.eval  # deterministic
    assert split_items(items, 0.0).eval == []
    assert len(split_items(items[:1], 0.5).train) == 1  # one question cannot be split
