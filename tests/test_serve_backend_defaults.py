"""`choose_backend` called the way `ores serve` calls it, with no probes passed: its defaults must be
the real module probes (is vllm importable, does torch see a CUDA GPU).

The defaults are bound when the function is defined, so patching `model_server.vllm_available`
would not reach them; what the probes themselves consult is faked instead (`importlib.util.find_spec`
and a stand-in `torch` module), so no vllm or torch import happens and the answer is decided by
the probes the CLI really uses.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types
from typing import Any

import pytest

from oresearch_cli.errors import OresError
from oresearch_cli.server.model_server import choose_backend


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch) -> Any:
    """`machine(vllm=..., torch=..., cuda=...)` makes this process look like such a machine."""
    real_find_spec = importlib.util.find_spec

    def setup(*, vllm: bool, torch: bool = True, cuda: bool) -> None:
        present = {"vllm": vllm, "torch": torch}

        def find_spec(name: str, *args: Any, **kwargs: Any) -> Any:
            if name in present:
                return importlib.machinery.ModuleSpec(name, None) if present[name] else None
            return real_find_spec(name, *args, **kwargs)

        fake_torch = types.ModuleType("torch")
        fake_torch.cuda = types.SimpleNamespace(is_available=lambda: cuda)  # type: ignore[attr-defined]
        monkeypatch.setattr(importlib.util, "find_spec", find_spec)
        monkeypatch.setitem(sys.modules, "torch", fake_torch)

    return setup


@pytest.mark.parametrize(
    ("vllm", "torch", "cuda", "expected"),
    [
        (True, True, True, "vllm"),
        (True, True, False, "transformers"),  # vllm installed, no GPU
        (False, True, True, "transformers"),  # a GPU, no vllm
        (True, False, True, "transformers"),  # no torch: no GPU seen
    ],
)
def test_auto_uses_the_module_probes_by_default(
    machine: Any, vllm: bool, torch: bool, cuda: bool, expected: str
) -> None:
    machine(vllm=vllm, torch=torch, cuda=cuda)
    assert choose_backend() == expected
    assert choose_backend("auto") == expected


def test_explicit_vllm_uses_the_module_probe_by_default(machine: Any) -> None:
    machine(vllm=False, cuda=True)
    with pytest.raises(OresError, match="vllm is not installed"):
        choose_backend("vllm")
    machine(vllm=True, cuda=False)
    assert choose_backend("vllm") == "vllm"
