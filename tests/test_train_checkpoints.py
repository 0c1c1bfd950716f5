"""Which checkpoint a rerun resumes from: a `kill -9` during a save leaves a folder the Trainer
cannot resume from, and it must be passed over, not chosen because its number is highest."""

from __future__ import annotations

import json
from pathlib import Path

from oresearch_cli.train.runs import CHECKPOINTS, incomplete_checkpoints, last_checkpoint


def _checkpoint(root: Path, step: int, state: str | None) -> None:
    folder = root / CHECKPOINTS / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"weights")
    if state is not None:
        (folder / "trainer_state.json").write_text(state, encoding="utf-8")


def test_a_checkpoint_cut_off_while_saving_is_passed_over(tmp_path: Path) -> None:
    whole = json.dumps({"global_step": 3})
    _checkpoint(tmp_path, 3, whole)
    _checkpoint(tmp_path, 6, None)  # killed before trainer_state.json
    _checkpoint(tmp_path, 9, whole[:5])  # killed while writing it
    assert last_checkpoint(tmp_path) == tmp_path / CHECKPOINTS / "checkpoint-3"
    assert incomplete_checkpoints(tmp_path) == ["checkpoint-6", "checkpoint-9"]


def test_steps_sort_as_numbers_not_text(tmp_path: Path) -> None:
    for step in (9, 12):
        _checkpoint(tmp_path, step, "{}")
    (tmp_path / CHECKPOINTS / "checkpoint-x").mkdir()
    assert last_checkpoint(tmp_path) == tmp_path / CHECKPOINTS / "checkpoint-12"
    assert incomplete_checkpoints(tmp_path) == []


def test_no_checkpoint_yet(tmp_path: Path) -> None:
    assert last_checkpoint(tmp_path) is None
    _checkpoint(tmp_path, 2, None)
    assert last_checkpoint(tmp_path) is None
    assert incomplete_checkpoints(tmp_path) == ["checkpoint-2"]
