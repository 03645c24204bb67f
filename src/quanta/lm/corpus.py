"""Corpora for per-token losses: load documents, tokenize, and index every predicted token.

Sources (``load_documents``):

* ``stdlib`` — the embedded default: the ``.py`` files of the running interpreter's standard
  library (no site-packages), sorted by relative path, so the corpus is deterministic for a
  given Python. ``stdlib:train`` / ``stdlib:test`` split it: every 10th file is test.
* ``site-packages`` — a larger offline training corpus: the ``.py`` files of the running
  environment's installed packages (``purelib`` / ``platlib``), sorted, minus exact copies of a
  ``stdlib:test`` file or of an earlier file (so it never leaks the held-out split). Unlike
  ``stdlib`` it depends on what is installed: record the environment with the run.
* ``A+B`` — the documents of ``A`` then those of ``B`` (e.g. ``stdlib:train+site-packages``).
* a text file (one document), a directory of text files (one document each, sorted; files that
  are not UTF-8 are skipped and counted), ``.jsonl`` or ``.jsonl.zst`` (one JSON object per line,
  its ``text`` field), or a Hugging Face dataset saved with ``save_to_disk``.

Tokenization (``tokenize_documents``) truncates each document to ``max_len`` tokens and adds no
BOS token by default (PAPER.md §3). A document of L tokens has L−1 *predicted tokens*: position
``pos`` (1 ≤ pos < L) is predicted from tokens ``< pos``. The index table has one row per
predicted token, ``(row, doc_id, pos, token_id)``; every per-token array in quanta is aligned
with it (row r of ``losses.npy`` is row r of the table). Documents shorter than 2 tokens predict
nothing: they are skipped and counted, never an error.
"""

from __future__ import annotations

import json
import re
import sysconfig
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from quanta._validation import QuantaInputError, check_choice, check_int

__all__ = [
    "Document",
    "TokenizedCorpus",
    "load_corpus",
    "load_documents",
    "save_corpus",
    "stdlib_files",
    "tokenize_documents",
]

_OWNER = "quanta.lm.corpus"
FORMATS = (
    "stdlib[:train|:test], site-packages, A+B, a text file, a directory, .jsonl, .jsonl.zst, "
    "a saved HF dataset"
)
DECODE_ERRORS = ("strict", "replace")
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class Document:
    """One document: a stable ``name`` (path or record number) and its text."""

    name: str
    text: str


def stdlib_files() -> list[Path]:
    """The standard library's ``.py`` files, sorted by path relative to the stdlib root."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = [p for p in root.rglob("*.py") if "site-packages" not in p.relative_to(root).parts]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def load_documents(
    source: str | Path = "stdlib",
    *,
    max_docs: int | None = None,
    text_field: str = "text",
    decode_errors: str = "strict",
) -> tuple[list[Document], int]:
    """Documents of ``source`` (see the module docstring) and the number skipped as unreadable.

    ``max_docs`` keeps the first documents in source order. ``decode_errors``: ``"strict"``
    refuses invalid UTF-8 in a text or ``.jsonl`` file, and a lone surrogate (a ``\\ud800``
    escape without its pair) in a ``.jsonl`` text, naming ``FILE:LINE`` (files of a directory
    that are not UTF-8 are skipped and counted); ``"replace"`` turns each bad byte or lone
    surrogate into U+FFFD and keeps the document.

    >>> docs, skipped = load_documents("stdlib:test", max_docs=2)
    >>> len(docs), skipped, docs[0].name.endswith(".py")
    (2, 0, True)
    """
    if max_docs is not None:
        max_docs = check_int(max_docs, "max_docs", _OWNER, low=1)
    errors = check_choice(decode_errors, "decode_errors", _OWNER, list(DECODE_ERRORS))
    docs: list[Document] = []
    skipped = 0
    for item in _iter_source(str(source), text_field, errors):
        if item is None:
            skipped += 1
            continue
        docs.append(item)
        if max_docs is not None and len(docs) >= max_docs:
            break
    if not docs:
        raise QuantaInputError(f"The corpus {str(source)!r} holds no readable documents.")
    return docs, skipped


def _site_roots() -> list[Path]:
    paths = sysconfig.get_paths()
    return sorted({Path(paths["purelib"]), Path(paths["platlib"])})


def _text_key(text: str) -> bytes:
    import hashlib

    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).digest()


def _iter_site_packages() -> Iterator[Document | None]:
    held_out = {_text_key(d.text) for d in load_documents("stdlib:test")[0]}
    seen = set(held_out)
    for root in _site_roots():
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*.py"), key=lambda p: p.relative_to(root).as_posix()):
            doc = _read_text(path, "site-packages/" + path.relative_to(root).as_posix())
            if doc is not None:
                key = _text_key(doc.text)
                if key in seen:  # a copy of a held-out file, or of an earlier file
                    continue
                seen.add(key)
            yield doc


def _iter_source(source: str, text_field: str, errors: str) -> Iterator[Document | None]:
    if "+" in source and not Path(source).exists():
        for part in source.split("+"):
            yield from _iter_source(part, text_field, errors)
        return
    if source == "site-packages":
        yield from _iter_site_packages()
        return
    if source.split(":")[0] == "stdlib":
        split = source.partition(":")[2]
        if split not in ("", "train", "test"):
            raise QuantaInputError(
                f"Unknown stdlib split {split!r}; use stdlib, stdlib:train or stdlib:test."
            )
        root = Path(sysconfig.get_paths()["stdlib"])
        for i, path in enumerate(stdlib_files()):
            if (split == "test" and i % 10 != 0) or (split == "train" and i % 10 == 0):
                continue
            yield _read_text(path, path.relative_to(root).as_posix())
        return
    path = Path(source)
    if not path.exists():
        raise QuantaInputError(f"Corpus {source!r} does not exist. Corpora: {FORMATS}.")
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "state.json").exists():
            yield from _iter_hf_dataset(path, text_field)
            return
        for p in sorted(q for q in path.rglob("*") if q.is_file()):
            yield _read_text(p, p.relative_to(path).as_posix(), errors)
        return
    name = path.name.lower()
    if name.endswith(".jsonl") or name.endswith(".jsonl.zst"):
        yield from _iter_jsonl(path, text_field, errors)
        return
    if name.endswith((".parquet", ".arrow", ".zip", ".gz", ".tar", ".zst", ".bz2", ".xz")):
        raise QuantaInputError(f"Unknown corpus format {path.name!r}. Corpora: {FORMATS}.")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise QuantaInputError(f"Cannot read corpus file '{path}': {exc.strerror}.") from None
    yield Document(path.name, _decode(data, path, errors))


def _read_text(path: Path, name: str, errors: str = "strict") -> Document | None:
    try:
        return Document(name, path.read_bytes().decode("utf-8", errors))
    except (UnicodeDecodeError, OSError):
        return None


def _decode(data: bytes, path: Path, errors: str, line: int = 0) -> str:
    """``data`` decoded as UTF-8; invalid bytes are refused naming ``path:line`` (``line`` 0:
    ``data`` is the whole file) or, with ``errors="replace"``, become U+FFFD."""
    try:
        return data.decode("utf-8", errors)
    except UnicodeDecodeError as exc:
        start = exc.start
        if not line:  # the whole file: the line and the byte within it
            line = data.count(b"\n", 0, start) + 1
            start -= data.rfind(b"\n", 0, exc.start) + 1
        raise QuantaInputError(
            f"{path}:{line}: invalid UTF-8 at byte {start + 1} of the line "
            f"(0x{exc.object[exc.start]:02x}); fix the file or pass --decode-errors replace "
            "(each bad byte becomes U+FFFD)."
        ) from None


def _no_surrogates(text: str, where: str, errors: str) -> str:
    """``text`` without lone surrogates (which JSON's ``\\ud800`` escapes can make and no
    tokenizer accepts): refused naming ``where``, or each replaced by U+FFFD."""
    found = _SURROGATE.search(text)
    if found is None:
        return text
    if errors == "replace":
        return _SURROGATE.sub("\ufffd", text)
    raise QuantaInputError(
        f"{where}: lone surrogate U+{ord(found.group()):04X} at character {found.start() + 1} "
        "of the text (a \\u escape without its pair); fix the file or pass --decode-errors "
        "replace (each becomes U+FFFD)."
    )


def _iter_jsonl(path: Path, text_field: str, errors: str) -> Iterator[Document | None]:
    import io

    if path.name.lower().endswith(".zst"):
        import zstandard

        raw: Any = zstandard.ZstdDecompressor().stream_reader(path.open("rb"))
        lines: Any = io.BufferedReader(raw)
    else:
        lines = path.open("rb")  # bytes: a bad byte is named by line, not by stream position
    with lines:
        for i, data in enumerate(lines):
            line = _decode(data, path, errors, line=i + 1)
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise QuantaInputError(
                    f"Line {i + 1} of '{path}' is not JSON ({exc.msg}); a .jsonl corpus has one "
                    f"JSON object with a {text_field!r} field per line."
                ) from None
            text = record.get(text_field) if isinstance(record, dict) else None
            if not isinstance(text, str):
                yield None
                continue
            yield Document(f"{path.name}:{i + 1}", _no_surrogates(text, f"{path}:{i + 1}", errors))


def _iter_hf_dataset(path: Path, text_field: str) -> Iterator[Document | None]:
    try:
        import datasets
    except ImportError:
        raise QuantaInputError(
            f"'{path}' is a saved Hugging Face dataset; reading it needs the 'datasets' package "
            "(pip install datasets)."
        ) from None
    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        split = "test" if "test" in ds else sorted(ds)[0]
        ds = ds[split]
    if text_field not in ds.column_names:
        raise QuantaInputError(
            f"The dataset at '{path}' has no {text_field!r} column (columns: "
            f"{', '.join(ds.column_names)}); pass --text-field."
        )
    for i, text in enumerate(ds[text_field]):
        yield Document(f"{path.name}:{i}", text) if isinstance(text, str) else None


# --------------------------------------------------------------------------- tokenized corpus


@dataclass
class TokenizedCorpus:
    """Token ids of every kept document, flat, with document offsets and names.

    ``tokens[offsets[d]:offsets[d + 1]]`` are document ``d``'s ids. Predicted tokens are numbered
    document by document, position by position: see :meth:`index_table`.
    """

    tokens: np.ndarray  # int32 [total tokens]
    offsets: np.ndarray  # int64 [n_docs + 1]
    names: list[str]
    max_len: int
    bos: bool
    n_skipped_short: int = 0
    n_skipped_unreadable: int = 0
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n_docs(self) -> int:
        return len(self.names)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def n_predicted(self) -> int:
        """Predicted tokens: Σ (L_d − 1)."""
        return int((self.lengths - 1).sum())

    def doc(self, d: int) -> np.ndarray:
        return self.tokens[self.offsets[d] : self.offsets[d + 1]]

    def row_offsets(self) -> np.ndarray:
        """First index-table row of every document ([n_docs + 1])."""
        return np.concatenate([[0], np.cumsum(self.lengths - 1)])

    def index_table(self) -> pd.DataFrame:
        """One row per predicted token: ``row, doc_id, pos, token_id`` (pos ≥ 1).

        >>> c = TokenizedCorpus(np.array([5, 6, 7, 8, 9], np.int32), np.array([0, 3, 5]),
        ...                     ["a", "b"], 1024, False)
        >>> c.index_table().to_dict("list")
        {'row': [0, 1, 2], 'doc_id': [0, 0, 1], 'pos': [1, 2, 1], 'token_id': [6, 7, 9]}
        """
        lengths = self.lengths
        doc_id = np.repeat(np.arange(self.n_docs, dtype=np.int32), lengths - 1)
        starts = np.repeat(self.offsets[:-1], lengths - 1)
        flat = np.arange(self.n_predicted, dtype=np.int64)
        pos = (flat - np.repeat(self.row_offsets()[:-1], lengths - 1) + 1).astype(np.int32)
        return pd.DataFrame(
            {
                "row": flat,
                "doc_id": doc_id,
                "pos": pos,
                "token_id": self.tokens[starts + pos].astype(np.int32),
            }
        )


def tokenize_documents(
    docs: Sequence[Document],
    tokenizer: Any,
    *,
    max_len: int = 1024,
    bos: bool = False,
    batch_size: int = 256,
    windows: int = 1,
) -> TokenizedCorpus:
    """Tokenize ``docs`` with a Hugging Face tokenizer, truncating to ``max_len`` tokens.

    ``bos=True`` prepends the tokenizer's BOS token (then position 1 is predicted from BOS alone).
    Documents with fewer than 2 tokens are skipped and counted in ``n_skipped_short``.

    ``windows > 1`` scores more of each long document: its tokens are cut into consecutive
    windows of ``max_len`` tokens (``max_len − 1`` after a BOS), at most ``windows`` of them,
    and every window is a document of its own, read from its own start (no context carried
    over from the window before). Window ``w ≥ 1`` of ``name`` is named ``name#w`` (the first
    keeps the plain name, so ``windows = 1`` is the plain truncation); a last window shorter
    than 2 tokens is dropped (not counted as skipped).

    >>> class Tok:  # one token per character
    ...     bos_token_id = 0
    ...     def __call__(self, texts, add_special_tokens):
    ...         return {"input_ids": [[ord(c) for c in t] for t in texts]}
    >>> c = tokenize_documents([Document("a", "abcdefg")], Tok(), max_len=3, windows=3)
    >>> c.names, c.lengths.tolist()
    (['a', 'a#1'], [3, 3])
    """
    max_len = check_int(max_len, "max_len", _OWNER, low=2)
    windows = check_int(windows, "windows", _OWNER, low=1)
    if bos and getattr(tokenizer, "bos_token_id", None) is None:
        raise QuantaInputError("bos=True but the tokenizer has no BOS token.")
    pieces: list[np.ndarray] = []
    names: list[str] = []
    short = 0
    step = max_len - 1 if bos else max_len
    for i in range(0, len(docs), batch_size):
        chunk = docs[i : i + batch_size]
        encoded = tokenizer([d.text for d in chunk], add_special_tokens=False)["input_ids"]
        for doc, ids in zip(chunk, encoded, strict=True):
            for w in range(windows):
                piece = ids[w * step : (w + 1) * step]
                if w and not piece:
                    break
                piece = [tokenizer.bos_token_id, *piece] if bos else piece
                if len(piece) < 2:
                    short += w == 0
                    continue
                pieces.append(np.asarray(piece, dtype=np.int32))
                names.append(doc.name if w == 0 else f"{doc.name}#{w}")
    if not pieces:
        raise QuantaInputError(
            f"Every document is shorter than 2 tokens ({short} skipped): nothing to predict."
        )
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in pieces])]).astype(np.int64)
    return TokenizedCorpus(
        np.concatenate(pieces), offsets, names, max_len, bos, n_skipped_short=short
    )


def save_corpus(corpus: TokenizedCorpus, directory: str | Path) -> None:
    """Write ``tokens.npy``, ``offsets.npy``, ``docs.parquet`` and ``index.parquet`` atomically."""
    from quanta.store import atomic_write, write_json, write_parquet

    directory = Path(directory)
    for name, arr in (("tokens.npy", corpus.tokens), ("offsets.npy", corpus.offsets)):
        with atomic_write(directory / name) as fh:
            np.save(fh, arr)
    write_parquet(
        directory / "docs.parquet",
        pd.DataFrame(
            {"doc_id": np.arange(corpus.n_docs), "name": corpus.names, "n_tokens": corpus.lengths}
        ),
    )
    write_parquet(directory / "index.parquet", corpus.index_table())
    write_json(
        directory / "corpus.json",
        {
            "max_len": corpus.max_len,
            "bos": corpus.bos,
            "n_docs": corpus.n_docs,
            "n_tokens": len(corpus.tokens),
            "n_predicted": corpus.n_predicted,
            "n_skipped_short": corpus.n_skipped_short,
            "n_skipped_unreadable": corpus.n_skipped_unreadable,
            **corpus.info,
        },
    )


def load_corpus(directory: str | Path) -> TokenizedCorpus:
    """Read a corpus written by :func:`save_corpus`."""
    directory = Path(directory)
    meta = json.loads((directory / "corpus.json").read_text())
    docs = pd.read_parquet(directory / "docs.parquet")
    known = {"max_len", "bos", "n_docs", "n_tokens", "n_predicted"}
    return TokenizedCorpus(
        np.load(directory / "tokens.npy"),
        np.load(directory / "offsets.npy"),
        docs["name"].tolist(),
        int(meta["max_len"]),
        bool(meta["bos"]),
        n_skipped_short=int(meta.get("n_skipped_short", 0)),
        n_skipped_unreadable=int(meta.get("n_skipped_unreadable", 0)),
        info={k: v for k, v in meta.items() if k not in known and not k.startswith("n_skipped")},
    )
