"""Language tags for questions and reports (ISO 639-1 codes, as DeepResearch Bench uses)."""

from __future__ import annotations

import os
import re
import tempfile
import threading
from pathlib import Path
from typing import Any

# Han ideographs (CJK unified, extension A, compatibility): what counts as Chinese script here and
# in the agent's length and language checks (agent.pieces, agent.fallbacks).
HAN_CHARS = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_HAN = re.compile(f"[{HAN_CHARS}]")
_KANA = re.compile(r"[\u3040-\u30ff]")
_HANGUL = re.compile(r"[\uac00-\ud7af]")
_LETTER = re.compile(r"[^\W\d_]")  # letters of any script; digits alone say nothing of a language


def detect_language(text: str) -> str:
    """`zh`, `ja`, `ko` by script (reliable even for one short question), else langid's guess.

    Script rules go first because statistical models misjudge short CJK questions that mix in
    Latin names and numbers; 'und' when there is nothing to judge.
    """
    letters = len(_LETTER.findall(text))
    if letters == 0:
        return "und"
    if _KANA.search(text):
        return "ja"
    if len(_HANGUL.findall(text)) / letters > 0.2:
        return "ko"
    if len(_HAN.findall(text)) / letters > 0.2:
        return "zh"
    code, _score = identifier().classify(text)
    return str(code)


# -- loading py3langid's model -------------------------------------------------------------------
#
# py3langid keeps its model LZMA-compressed and decompresses it on first use: about a second, in
# every process that classifies (each filter worker too). The decompressed arrays are cached as
# .npy files under the user's cache directory on first use, and later loads map those instead
# (tens of milliseconds; the pages are shared by all processes). The identifier is built from
# the same arrays exactly as py3langid 0.4 builds it and installed as py3langid's own, so
# `py3langid.classify` and `identifier()` answer as before. Another py3langid version, or any
# failure to read or write the cache, leaves loading to py3langid.

_LOCK = threading.Lock()
_ARRAYS = ("ptc", "pc", "classes", "nextmove", "nextmove_row", "out_feat")


def identifier() -> Any:
    """py3langid's identifier (the one `py3langid.classify` uses), loaded from the cache if it can be."""
    import py3langid.langid as langid  # imported lazily: most commands never need it

    if langid.IDENTIFIER is None:
        with _LOCK:
            if langid.IDENTIFIER is None:
                langid.IDENTIFIER = _cached_identifier(langid)  # None: py3langid loads it below
    return langid._get_identifier()


def _cache_root() -> Path:
    if os.environ.get("XDG_CACHE_HOME"):
        base = Path(os.environ["XDG_CACHE_HOME"])
    else:
        home = Path("~").expanduser()
        if not home.is_dir():  # no home (or "~" unexpanded): no cache rather than one somewhere odd
            raise OSError("no home directory for the cache")
        base = home / ".cache"
    if not base.is_absolute():  # the XDG spec: a relative path is to be ignored
        raise OSError("the cache directory is not an absolute path")
    return base / "oresearch-cli"


def _cached_identifier(langid: Any) -> Any | None:
    try:
        import numpy as np
        import py3langid
        from py3langid import modelio

        version = str(py3langid.__version__)
        if not version.startswith("0.4."):  # the loading below is 0.4's
            return None
        source = Path(langid.MODEL_DIR) / langid.MODEL_FILE
        stat = source.stat()
        folder = _cache_root() / f"py3langid-{version}-{stat.st_size}-{stat.st_mtime_ns}"
        if not (folder / "out_feat.npy").exists():
            _write_cache(source, folder)
        data = {name: np.load(folder / f"{name}.npy", mmap_mode="r", allow_pickle=False) for name in _ARRAYS}
        # What py3langid.modelio.load_model returns and LanguageIdentifier.from_model_file does with it.
        return langid.LanguageIdentifier(
            np.asarray(data["ptc"]),
            np.asarray(data["pc"]),
            data["classes"].tolist(),
            modelio._to_array(data["nextmove"]),
            data["out_feat"].tolist(),
            norm_probs=False,
            tk_row=modelio._to_array(data["nextmove_row"]),
        )
    except Exception:  # a cache is an optimization: any failure means py3langid's own load
        return None


def _write_cache(source: Path, folder: Path) -> None:
    import lzma
    import shutil

    import numpy as np

    folder.parent.mkdir(parents=True, exist_ok=True)
    # Written into a fresh folder that is then renamed into place, so no reader sees part of one.
    staging = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    try:
        with tempfile.TemporaryFile(dir=staging) as npz_file:  # as py3langid does: npz needs seeking
            with lzma.open(source) as compressed:
                shutil.copyfileobj(compressed, npz_file, length=1 << 20)
            npz_file.seek(0)
            with np.load(npz_file, allow_pickle=False) as npz:
                for name in _ARRAYS:
                    np.save(staging / f"{name}.npy", npz[name], allow_pickle=False)
        os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if not (folder / "out_feat.npy").exists():  # else another process just wrote the same cache
            raise
