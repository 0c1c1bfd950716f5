"""textutil/lang.py loads py3langid's model from a .npy cache by building the identifier as
py3langid 0.4 does from its own (private) arrays. The plain path is py3langid loading itself:
both must answer the same, scores included, or the cache changes what the filter decides."""

from __future__ import annotations

import pytest

TEXTS = [
    "The light-dependent reactions take place on the thylakoid membranes.",
    "Les réactions photochimiques se déroulent dans les thylakoïdes.",
    "Die Lichtreaktionen finden an den Thylakoidmembranen statt.",
    "Las reacciones dependientes de la luz ocurren en los tilacoides.",
    "Световые реакции происходят на мембранах тилакоидов.",
    "光合作用的光反应发生在类囊体膜上。",
    "WHAT DOES THE CALVIN CYCLE PRODUCE",
    "ok",
]


def test_the_cached_identifier_answers_as_py3langid_loading_itself(tmp_path, monkeypatch) -> None:
    py3langid = pytest.importorskip("py3langid")
    import py3langid.langid as langid

    from oresearch_cli.textutil import lang

    if not str(py3langid.__version__).startswith("0.4."):
        pytest.skip("the cache is for py3langid 0.4; other versions load themselves")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # a fresh cache: written, then read back
    cached = lang._cached_identifier(langid)
    assert cached is not None and any(tmp_path.rglob("out_feat.npy"))
    plain = langid.LanguageIdentifier.from_modelpath(
        str(langid.MODEL_DIR / langid.MODEL_FILE), norm_probs=False
    )
    for text in TEXTS:
        assert cached.classify(text) == plain.classify(text), text
