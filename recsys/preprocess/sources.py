"""Raw input: resolve a file, glob or directory into ordered sources and stream them in chunks.

A chunk is a run of whole lines (about `chunk_bytes`) with the 1-based number of its first line;
chunk boundaries depend only on the bytes and `chunk_bytes`, so a resumed run sees the same chunks.
Plain and gzip files read the same way; a gzip stream that ends early is an error naming the file.
"""

from __future__ import annotations

import glob
import gzip
import os
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from recsys.preprocess.errors import PreprocessError


@dataclass
class Source:
    """One raw file; `lines` and `crc32` (of the decompressed bytes) are filled by a full read."""

    path: str
    size: int
    mtime: float
    lines: int | None = None
    crc32: int | None = None

    @property
    def gzip(self) -> bool:
        return self.path.endswith(".gz")


@dataclass
class Chunk:
    """A run of whole lines. Either `data` holds its bytes, or (plain files with a known chunk
    layout) it is `size` bytes at `offset` of the file, read by the worker itself: no copy of
    the data passes through the main process."""

    source: int  # index into the source list
    index: int  # chunk number within its source
    first_line: int  # 1-based
    data: bytes = field(repr=False, default=b"")
    offset: int = -1  # >= 0: read `size` bytes at `offset` of the source file
    size: int = 0
    lines: int = -1  # lines in the chunk, when known from the layout


def _natural_key(path: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", Path(path).name)]


def resolve_sources(raw: str | None) -> list[Source]:
    """Files named by `raw` (a file, a glob or a directory), in natural order (day_2 < day_10)."""
    if not raw:
        raise PreprocessError(
            "data.raw is not set: pass the raw input, e.g. data.raw=/path/train.txt"
        )
    path = Path(raw).expanduser()
    if path.is_dir():
        paths = [str(p) for p in path.iterdir() if p.is_file() and not p.name.startswith(".")]
    elif path.is_file():
        paths = [str(path)]
    else:
        paths = [p for p in glob.glob(str(path)) if os.path.isfile(p)]
    if not paths:
        raise PreprocessError(f"data.raw={raw}: no such file, directory or matching files")
    paths.sort(key=_natural_key)
    return [Source(p, os.stat(p).st_size, os.stat(p).st_mtime) for p in paths]


class _Reader:
    """A source opened for reading; `position` is how far into the file on disk we are."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.raw = open(source.path, "rb")  # noqa: SIM115 (closed in close())
        self.stream: BinaryIO = gzip.GzipFile(fileobj=self.raw) if source.gzip else self.raw
        self.crc = 0
        self.lines = 0
        self.offset = -1  # where the last read began in a plain file (-1: gzip)

    def read(self, n: int) -> bytes:
        self.offset = self.stream.tell() if not self.source.gzip else -1
        try:
            data = self.stream.read(n)
            if data and not data.endswith(b"\n"):
                data += self.stream.readline()
        except (EOFError, gzip.BadGzipFile, zlib.error) as e:
            raise PreprocessError(
                f"{self.source.path}: the gzip stream is truncated or corrupt ({e}); "
                "the file is incomplete: download it again"
            ) from e
        self.crc = zlib.crc32(data, self.crc)
        self.lines += data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)
        return data

    @property
    def position(self) -> int:
        return self.raw.tell()

    def close(self) -> None:
        self.raw.close()


def iter_chunks(
    sources: list[Source],
    chunk_bytes: int,
    progress: callable | None = None,
    layouts: dict[str, list[list[int]]] | None = None,
) -> Iterator[Chunk]:
    """Every chunk of every source in order; fills each source's `lines` and `crc32` at its end.

    `progress(bytes_on_disk)` is called after each chunk with the on-disk bytes consumed. A plain
    source with an entry in `layouts` (`chunk_layout`, from an earlier full read with the same
    `chunk_bytes`, its `lines` and `crc32` already set) is not read: its chunks come as
    (offset, size) for the worker to read.
    """
    for s, source in enumerate(sources):
        layout = (layouts or {}).get(source.path)
        if layout is not None and not source.gzip:
            for index, (offset, line, size) in enumerate(layout):
                end = layout[index + 1][1] if index + 1 < len(layout) else source.lines + 1
                yield Chunk(s, index, line, offset=offset, size=size, lines=end - line)
                if progress is not None:
                    progress(size)
            continue
        reader = _Reader(source)
        try:
            index, line, last = 0, 1, 0
            while data := reader.read(chunk_bytes):
                yield Chunk(s, index, line, data, offset=reader.offset, size=len(data))
                line = reader.lines + 1
                index += 1
                if progress is not None:
                    progress(reader.position - last)
                    last = reader.position
            source.lines, source.crc32 = reader.lines, reader.crc
        finally:
            reader.close()


def scan_plain(
    source: Source, chunk_bytes: int, progress: callable | None = None,
    on_chunk: callable | None = None,
) -> list[list[int]]:  # fmt: skip
    """The chunk layout of a plain (not gzip) source, `[offset, first_line, size]` per chunk,
    exactly the chunks `iter_chunks` cuts; fills the source's `lines` and `crc32`.
    `on_chunk(index, [offset, first_line, size], lines)` is called as each chunk is cut.

    The line-count pass runs before any worker has work, so its speed is wall time: the file is
    read into one reused buffer (no fresh 64 MiB objects, no concatenation), the chunk end found
    with `bytearray.find` (memchr), and newlines counted with numpy (SIMD) into a reused mask.
    """
    window = max(chunk_bytes, 1) + (1 << 20)
    buf = bytearray(window)
    view = memoryview(buf)
    arr = np.frombuffer(buf, dtype=np.uint8)
    mask = np.empty(window, dtype=bool)
    layout: list[list[int]] = []
    offset, line, crc, got, eof = 0, 1, 0, 0, False
    with open(source.path, "rb", buffering=0) as f:
        while True:
            end = -1
            while True:  # enough bytes to cut a chunk: chunk_bytes and the rest of its line
                if got >= chunk_bytes:
                    pos = buf.find(b"\n", chunk_bytes - 1, got)
                    if pos >= 0:
                        end = pos + 1
                        break
                if eof:
                    end = got
                    break
                if got == len(buf):  # a line longer than the window: a buffer twice the size
                    buf = bytearray(buf) + bytearray(len(buf))
                    view, arr = memoryview(buf), np.frombuffer(buf, dtype=np.uint8)
                    mask = np.empty(len(buf), dtype=bool)
                n = f.readinto(view[got:])
                eof = n == 0
                got += n
            if end == 0:
                break
            np.equal(arr[:end], 10, out=mask[:end])
            lines = int(np.count_nonzero(mask[:end])) + (0 if buf[end - 1] == 10 else 1)
            crc = zlib.crc32(view[:end], crc)
            layout.append([offset, line, end])
            if on_chunk is not None:
                on_chunk(len(layout) - 1, layout[-1], lines)
            offset, line = offset + end, line + lines
            if progress is not None:
                progress(end)
            buf[: got - end] = view[end:got]
            got -= end
    source.lines, source.crc32 = line - 1, crc
    return layout


def count_lines(source: Source, chunk_bytes: int = 64 << 20) -> int:
    """Lines in a source (a cheap C-speed pass; decompresses gzip)."""
    reader = _Reader(source)
    try:
        while reader.read(chunk_bytes):
            pass
    finally:
        reader.close()
    source.lines, source.crc32 = reader.lines, reader.crc
    return reader.lines
