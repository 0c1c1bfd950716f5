"""The Chinese demo corpus: classical texts from the npm package `chinese-poetry` (MIT), read from
its `npm pack` file, a folder holding it, or the copy `make install` extracts (`chinese-poetry`).
A small package in the real layout is made here; one test reads the installed copy."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from oresearch_cli.tools.corpus import Corpus, build_corpus, iter_documents
from oresearch_cli.tools.corpus import chinese_poetry as cp
from oresearch_cli.tools.corpus.readers import ZH_POETRY_SOURCE, detect_format
from oresearch_cli.tools.errors import CorpusInputError
from oresearch_cli.workspace import Workspace

from conftest import error_lines, ores

# dist/<file> -> JSON, each in the shape the package ships (cut down)
FILES: dict[str, Any] = {
    "lunyu/lunyu.json": [
        {"chapter": "学而篇", "paragraphs": ["子曰：“学而时习之，不亦说乎？”", "有子曰：“其为人也孝弟。”"]},
        {"chapter": "为政篇", "paragraphs": ["子曰：“为政以德，譬如北辰。”"]},
    ],
    "shijing/shijing.json": [
        {"title": "关雎", "chapter": "国风", "section": "周南", "content": ["关关雎鸠，在河之洲。"]},
        {"title": "扬之水", "chapter": "国风", "section": "王风", "content": ["扬之水，不流束薪。"]},
        {"title": "扬之水", "chapter": "国风", "section": "王风", "content": ["扬之水，不流束楚。"]},
    ],
    "mengxue/guwenguanzhi.json": {
        "title": "古文觀止",
        "abstract": ["《古文觀止》是清人吳楚材、吳調侯選定的古代散文選本。"],
        "content": [
            {
                "title": "卷一・周文",
                "content": [
                    {
                        "chapter": "鄭伯克段於鄢",
                        "source": "《左傳》",
                        "author": "先秦：左丘明 ",
                        "paragraphs": ["初，鄭武公娶於申，曰武姜。"],
                    }
                ],
            }
        ],
    },
    "mengxue/qianjiashi.json": {
        "title": "千家詩",
        "author": "南宋謝枋得/明代王相",
        "content": [
            {
                "type": "五言絕句",
                "content": [
                    {"chapter": "春眠", "author": "（唐）孟浩然", "paragraphs": ["春眠不覺曉，處處聞啼鳥。"]}
                ],
            }
        ],
    },
    "mengxue/sanzijing-new.json": {
        "title": "三字經",
        "author": "王應麟",
        "tags": "新版",
        "paragraphs": ["人之初，性本善。"],
    },
    "songci/宋词三百首.json": [
        {"author": "李清照", "paragraphs": ["寻寻觅觅，冷冷清清，凄凄惨惨戚戚。"], "rhythmic": "声声慢"}
    ],
    "songci/author.song.json": [
        {
            "name": "李清照",
            "description": "李清照：（1084－约 1151）南宋女词人。号易安居士。",
            "short_description": "",
        },
        {"name": "无名氏", "description": "--", "short_description": ""},
    ],
    "yuanqu/yuanqu.json": [
        {
            "dynasty": "yuan",
            "author": "马致远",
            "paragraphs": ["枯藤老树昏鸦，小桥流水人家。"],
            "title": "天净沙・秋思",
        }
    ],
}
N_DOCS = 12  # 2 论语 + 3 诗经 + 2 古文观止 (intro, essay) + 千家诗 + 三字经 + 宋词 + 1 bio + 元曲


def make_package(root: Path, name: str = "chinese-poetry") -> Path:
    """The package as `npm install` or the extractor lays it out: package.json, LICENSE, dist/."""
    (root / "dist").mkdir(parents=True)
    (root / "package.json").write_text(json.dumps({"name": name, "version": "2.0.1"}))
    (root / "LICENSE").write_text("The MIT License (MIT)\n\nCopyright (c) 2016 JackeyGao\n")
    for rel, data in FILES.items():
        (root / "dist" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "dist" / rel).write_text(json.dumps(data, ensure_ascii=False))
    return root


def make_tgz(path: Path, package: Path) -> Path:
    """The `npm pack` file: everything under `package/`, plus a big file the reader skips."""
    with tarfile.open(path, "w:gz") as tar:
        tar.add(package, arcname="package")
        skipped = b"[]" * 1000
        info = tarfile.TarInfo("package/dist/quantangshi/poet.song.0.json")
        info.size = len(skipped)
        tar.addfile(info, io.BytesIO(skipped))
    return path


@pytest.fixture
def package(tmp_path: Path) -> Path:
    return make_package(tmp_path / "chinese-poetry")


def test_reads_the_package_folder(package: Path) -> None:
    assert detect_format(package) == "chinese-poetry"
    docs = {d.id: d for d in iter_documents(package)}
    assert len(docs) == N_DOCS
    first = docs["论语/学而篇"]
    assert first.title == "论语 · 学而篇" and first.url is None
    assert first.text == "子曰：“学而时习之，不亦说乎？”\n有子曰：“其为人也孝弟。”"
    assert first.meta["license"].startswith("MIT") and "JackeyGao" in first.meta["license"]
    assert first.meta["file"] == "dist/lunyu/lunyu.json" and first.meta["package"] == "chinese-poetry@2.0.1"
    # the same title twice in one section: two documents
    assert docs["诗经/国风·王风/扬之水 (2)"].text == "扬之水，不流束楚。"
    assert docs["诗经/国风·周南/关雎"].title == "关雎 · 诗经·国风·周南"
    essay = docs["蒙学/古文觀止/卷一・周文/鄭伯克段於鄢"]
    assert essay.title == "鄭伯克段於鄢 · 左丘明"
    assert (essay.meta["author"], essay.meta["dynasty"], essay.meta["source"]) == (
        "左丘明",
        "先秦",
        "《左傳》",
    )
    assert docs["蒙学/古文觀止/简介"].text.startswith("《古文觀止》是清人")
    poem = docs["蒙学/千家詩/五言絕句/春眠"]
    assert (poem.title, poem.meta["dynasty"]) == ("春眠 · 孟浩然", "唐")
    assert docs["蒙学/三字經（新版）"].meta.get("dynasty") is None  # 新版 is an edition
    ci = docs["宋词三百首/李清照/声声慢（寻寻觅觅）"]
    assert ci.title == "声声慢（寻寻觅觅） · 李清照" and ci.meta["rhythmic"] == "声声慢"
    assert docs["宋词作者/李清照"].text.startswith("李清照：（1084")
    assert "宋词作者/无名氏" not in docs  # no biography, no document
    assert docs["元曲/马致远/天净沙・秋思"].meta["dynasty"] == "元"


def test_reads_the_npm_pack_file_the_same(package: Path, tmp_path: Path) -> None:
    tgz = make_tgz(tmp_path / "chinese-poetry-2.0.1.tgz", package)
    assert detect_format(tgz) == "chinese-poetry"
    from_tgz = [(d.id, d.title, d.text, d.meta) for d in iter_documents(tgz)]
    assert from_tgz == [(d.id, d.title, d.text, d.meta) for d in iter_documents(package)]
    # `make install` keeps only what the reader uses
    dest = tmp_path / "share" / "chinese-poetry"
    assert cp.main(["extract", str(tgz), str(dest)]) == 0
    assert (dest / "LICENSE").exists() and not (dest / "dist" / "quantangshi").exists()
    assert len(list(iter_documents(dest))) == N_DOCS


def test_the_keyword_reads_the_installed_copy(
    package: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert ZH_POETRY_SOURCE == cp.SOURCE == "chinese-poetry"
    monkeypatch.setattr(cp, "installed_dir", lambda: package)
    ws = Workspace.open(tmp_path / "ws")
    info = build_corpus(ws, ZH_POETRY_SOURCE, "zh")
    assert (info.n_docs, info.source_format, info.source) == (N_DOCS, "chinese-poetry", "chinese-poetry")
    corpus = Corpus.open(ws, "zh")
    doc = corpus.get_by_url("corpus://zh/论语/学而篇")
    assert doc is not None and doc.title == "论语 · 学而篇" and doc.meta["license"].startswith("MIT")
    corpus.close()
    monkeypatch.setattr(cp, "installed_dir", lambda: tmp_path / "nowhere")
    with pytest.raises(CorpusInputError, match=r"not installed in .*nowhere; run `make install`"):
        list(iter_documents(Path(ZH_POETRY_SOURCE)))


def test_bad_sources_say_what_to_do(tmp_path: Path) -> None:
    bad = tmp_path / "chinese-poetry-9.9.9.tgz"
    bad.write_bytes(b"not a tarball")
    result = ores("corpus", "build", bad.name, "--name", "zh", "--ws", "ws", cwd=tmp_path)
    lines = error_lines(result.stderr)
    assert result.returncode != 0 and len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {bad.name}: not a readable npm package file"), lines[0]
    assert lines[0].endswith("run `npm pack chinese-poetry@2.0.1` again"), lines[0]
    other = make_tgz(tmp_path / "chinese-poetry-1.0.0.tgz", make_package(tmp_path / "other", name="left-pad"))
    (tmp_path / "empty").mkdir()
    for source in (other, tmp_path / "empty"):
        with pytest.raises(
            CorpusInputError, match="not the chinese-poetry npm package .* `npm pack chinese-poetry@2.0.1`"
        ):
            list(iter_documents(source, "chinese-poetry"))
    assert detect_format(tmp_path / "empty") == "dir"  # a plain folder stays a folder of files


def test_installed_package() -> None:
    if not (cp.installed_dir() / "package.json").exists():
        pytest.skip("chinese-poetry is not installed (`make install` installs it)")
    docs = {d.id: d for d in iter_documents(Path(ZH_POETRY_SOURCE))}
    assert len(docs) == 16553
    assert docs["论语/学而篇"].text.startswith("子曰：“学而时习之，不亦说乎？")
    assert docs["楚辞/离骚"].title == "离骚 · 楚辞 · 屈原"
    assert docs["楚辞/九歌/山鬼"].title == "山鬼 · 楚辞·九歌 · 屈原"
    assert docs["蒙学/古文觀止/卷一・周文/鄭伯克段於鄢"].title == "鄭伯克段於鄢 · 左丘明"
    assert "易安居士" in docs["宋词作者/李清照"].text
    assert all(d.meta["license"].startswith("MIT") for d in docs.values())
    counts: dict[str, int] = {}
    for d in docs.values():
        counts[d.meta["collection"]] = counts.get(d.meta["collection"], 0) + 1
    assert (counts["论语"], counts["诗经"], counts["楚辞"], counts["唐诗作者"]) == (20, 305, 65, 2573)
