"""Raw Criteo lines -> validated columns, with every rejected line accounted for.

Two paths produce the same result. The fast path parses a whole chunk with pyarrow's CSV reader
(C++, typed columns) and validates labels and hex ids vectorised; lines with a wrong field count
come back through pyarrow's invalid-row handler. The careful path is plain Python per line: it
repairs what is unambiguous (trailing empty fields stripped or added, CRLF) and rejects the rest
with a reason; its clean output is then fed to the fast path. A chunk takes the careful path only
when the fast one cannot vouch for it (a non-integer dense value, a stray CR, ...).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

NUM_DENSE = 13
NUM_SPARSE = 26
DENSE_NAMES = [f"I{j + 1}" for j in range(NUM_DENSE)]
SPARSE_NAMES = [f"C{f + 1}" for f in range(NUM_SPARSE)]

_DENSE_RE = re.compile(rb"-?[0-9]{1,18}\Z")
_HEX_RE = re.compile(rb"[0-9a-fA-F]{8}\Z")
_HEX_LUT = np.full(256, 255, dtype=np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEX_LUT[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _HEX_LUT[_c] = 10 + _i
# two hex digits (a little-endian uint16 of two bytes) -> their byte value, 0xFFFF when invalid
_PAIR = np.arange(65536)
_HEX_PAIR_LUT = np.where(
    (_HEX_LUT[_PAIR & 255] < 16) & (_HEX_LUT[_PAIR >> 8] < 16),
    (_HEX_LUT[_PAIR & 255].astype(np.uint16) << 4) | _HEX_LUT[_PAIR >> 8],
    0xFFFF,
).astype(np.uint16)
del _PAIR
_ZEROS = np.uint64(0x3030303030303030)  # eight ASCII '0'
_HIGH = np.uint64(0xF0F0F0F0F0F0F0F0)
_SIXES = np.uint64(0x0606060606060606)
# _DIGIT_BYTES[d]: the high d bytes of a word (the digits of a number of d <= 8 digits ending it)
_DIGIT_BYTES = np.array([~((1 << (8 * (8 - d))) - 1) & (2**64 - 1) for d in range(9)],
                        dtype=np.uint64)  # fmt: skip


@dataclass
class ParsedBlock:
    """Valid rows of one chunk (in line order) plus what happened to the others."""

    lines: np.ndarray  # [n] int64, 1-based line number in the source file
    label: np.ndarray  # [n] int8 (0 when the layout is unlabelled)
    dense: np.ndarray  # [13, n] int64, missing = 0 (feature-major: one row per column)
    dense_missing: np.ndarray  # [13, n] bool
    cats: np.ndarray  # [26, n] uint32 (the 8-hex-digit value), missing = 0
    cat_missing: np.ndarray  # [26, n] bool
    rows_in: int = 0
    rejects: list[tuple[int, str, bytes]] = field(default_factory=list)  # (line, reason, text)
    repaired: dict[str, int] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return len(self.lines)

    def take(self, mask: np.ndarray) -> ParsedBlock:
        """The rows where `mask` holds (bookkeeping fields are kept as they are)."""
        return ParsedBlock(
            self.lines[mask], self.label[mask], self.dense[:, mask], self.dense_missing[:, mask],
            self.cats[:, mask], self.cat_missing[:, mask], self.rows_in, self.rejects,
            self.repaired,
        )  # fmt: skip


class _NeedsCarefulPath(Exception):
    pass


def count_lines(data: bytes) -> int:
    """Lines in a chunk: newlines, plus one for a last line without a final newline."""
    if not data:
        return 0
    return data.count(b"\n") + (0 if data.endswith(b"\n") else 1)


def parse_chunk(data: bytes, first_line: int, labelled: bool = True) -> ParsedBlock:
    """Parse one chunk of whole lines whose first line is `first_line` (1-based)."""
    n_lines = count_lines(data)
    strict = _parse_regular(data, first_line, labelled, n_lines)
    if strict is not None:
        return strict
    try:
        table, invalid = _read_fast(data, labelled)
        if table.num_rows + len(invalid) != n_lines or any(n < 1 for n, _ in invalid):
            raise _NeedsCarefulPath
    except (pa.ArrowInvalid, _NeedsCarefulPath):
        return _careful(data.split(b"\n")[:n_lines], first_line, labelled, n_lines)
    bad_numbers = np.array([n for n, _ in invalid], dtype=np.int64)
    keep = np.ones(n_lines, dtype=bool)
    keep[bad_numbers - 1] = False
    lines = np.flatnonzero(keep).astype(np.int64) + first_line
    block = _columns(table, lines, labelled, data, first_line)
    if invalid:
        texts = [t.encode() for _, t in invalid]
        fixed = _careful(texts, 0, labelled, len(texts), bad_numbers + first_line - 1)
        block = _merge(block, fixed)
    block.rows_in = n_lines
    return block


def _parse_regular(
    data: bytes, first_line: int, labelled: bool, n_lines: int
) -> ParsedBlock | None:
    """The common case in numpy alone, or None when the chunk is not perfectly regular.

    Regular: every line has exactly the expected fields, labels are `0`/`1`, dense values are
    empty or `-?[0-9]{1,18}`, categorical values empty or 8 hex digits. Such a chunk has no
    rejects and no repairs, and this gives exactly what the pyarrow path gives; any other chunk
    returns None and takes that path. Fields are located from the positions of TAB/LF bytes
    (a `[lines, fields]` grid), hex ids are read as unaligned 8-byte words and decoded two digits
    at a time through a table, dense integers of up to 8 digits are converted eight digits at
    once in 64-bit arithmetic (SWAR), longer ones (rare) one by one.
    """
    if n_lines == 0:
        return None
    size = len(data)
    buf = np.empty(8 + size + (0 if data.endswith(b"\n") else 1), dtype=np.uint8)
    buf[:8] = 48  # padding, so an 8-byte word ending at any field end stays inside the buffer
    buf[8 : 8 + size] = np.frombuffer(data, dtype=np.uint8)
    buf[-1] = 10
    return _parse_buffer(buf, first_line, labelled, n_lines)


_READ_BUF: np.ndarray | None = None  # reused by `parse_file_range` (one per worker process)


def parse_file_range(
    path: str, offset: int, size: int, first_line: int, labelled: bool = True,
    lines: int = -1, stamp: tuple[int, float] | None = None,
) -> ParsedBlock:  # fmt: skip
    """`parse_chunk` of the `size` bytes at `offset` of `path` (whole lines), read straight into
    a buffer kept for the next chunk: no fresh allocation, page faults or copy per chunk.

    `lines`, when known (the line-count pass recorded it), saves counting the newlines again;
    it is trusted only while the file still has the size and mtime of `stamp` (as when it was
    counted), else the file changed under the run: an error.
    """
    from recsys.preprocess.errors import PreprocessError

    global _READ_BUF
    if _READ_BUF is None or len(_READ_BUF) < size + 9:
        _READ_BUF = np.empty(size + 9 + size // 16, dtype=np.uint8)
    buf = _READ_BUF
    with open(path, "rb", buffering=0) as f:
        st = os.fstat(f.fileno())
        f.seek(offset)
        got = f.readinto(memoryview(buf)[8 : 8 + size])
    if got != size or (stamp is not None and (st.st_size, st.st_mtime) != tuple(stamp)):
        raise PreprocessError(f"{path}: changed while being converted; rerun")
    text = buf[8 : 8 + size]
    ends_nl = size > 0 and text[-1] == 10
    if lines < 0 or stamp is None:
        lines = int(np.count_nonzero(text == 10)) + (0 if ends_nl or size == 0 else 1)
    if lines:
        buf[:8] = 48
        buf[8 + size] = 10
        block = _parse_buffer(buf[: 8 + size + (0 if ends_nl else 1)], first_line, labelled, lines)
        if block is not None:
            return block
    return parse_chunk(text.tobytes(), first_line, labelled)


def _parse_buffer(
    buf: np.ndarray, first_line: int, labelled: bool, n_lines: int
) -> ParsedBlock | None:
    """`_parse_regular` on the chunk's bytes laid out as 8 padding bytes, the text, and a final
    LF (the text's own or one added)."""
    n_fields = NUM_DENSE + NUM_SPARSE + (1 if labelled else 0)
    # TAB (9) and LF (10): buf - 9 < 2 in uint8 (two passes; other control bytes stay inside
    # fields, where the field checks below reject them)
    is_delim = np.subtract(buf, np.uint8(9))
    is_delim = np.less(is_delim, np.uint8(2), out=is_delim.view(np.bool_))  # in place
    delim = np.flatnonzero(is_delim)
    del is_delim
    if len(delim) != n_lines * n_fields:
        return None
    # the buffer has exactly n_lines LFs: if every line's last delimiter is one, the rest are TABs
    if not (buf[delim[n_fields - 1 :: n_fields]] == 10).all():
        return None
    # Row-major [lines, fields] grid of field ends (the delimiter after each field), worked
    # through in blocks of rows: the byte gathers walk the buffer forwards and the temporaries
    # stay in cache.
    ends = delim.reshape(n_lines, n_fields)
    line_starts = np.empty(n_lines, dtype=np.int64)
    line_starts[0] = 8
    line_starts[1:] = ends[:-1, -1] + 1
    words = np.ndarray((len(buf) - 7,), dtype=np.uint64, buffer=buf, strides=(1,))
    block = ParsedBlock(
        np.arange(first_line, first_line + n_lines, dtype=np.int64),
        np.zeros(n_lines, dtype=np.int8),
        np.empty((NUM_DENSE, n_lines), dtype=np.int64),
        np.empty((NUM_DENSE, n_lines), dtype=bool),
        np.empty((NUM_SPARSE, n_lines), dtype=np.uint32),
        np.empty((NUM_SPARSE, n_lines), dtype=bool),
        rows_in=n_lines,
    )
    for lo in range(0, n_lines, _BLOCK_ROWS):
        rows = slice(lo, lo + _BLOCK_ROWS)
        if not _parse_rows(buf, words, ends[rows], line_starts[rows], labelled, block, rows):
            return None
    return block


_BLOCK_ROWS = 8192


def _parse_rows(
    buf: np.ndarray, words: np.ndarray, ends: np.ndarray, line_starts: np.ndarray,
    labelled: bool, out: ParsedBlock, rows: slice,
) -> bool:  # fmt: skip
    """Decode one block of rows into `out[..., rows]`; False when one is not regular."""
    first = 0
    if labelled:
        if not (ends[:, 0] - line_starts == 1).all():
            return False
        label = buf[line_starts] - np.uint8(48)
        if label.max() > 1:
            return False
        out.label[rows] = label
        first = 1
    dense = _dense_fields(buf, words, _field_starts(ends, line_starts, first, NUM_DENSE),
                          ends[:, first : first + NUM_DENSE])  # fmt: skip
    if dense is None:
        return False
    out.dense[:, rows] = dense[0].T
    out.dense_missing[:, rows] = dense[1].T
    c0 = first + NUM_DENSE  # >= 1: a field ends before each categorical one
    gap = np.diff(ends[:, c0 - 1 :], axis=1)  # [n, 26] width + 1
    cat_missing = gap == 1
    if not (cat_missing | (gap == 9)).all():
        return False
    raw = words[ends[:, c0:] - 8]  # [n, 26] the 8 bytes before each field's end
    raw[cat_missing] = _ZEROS  # missing: "00000000" (value 0)
    pairs = _HEX_PAIR_LUT[raw.view(np.uint16)]
    if pairs.max() > 255:
        return False
    out.cats[:, rows] = pairs.astype(np.uint8).view(">u4").reshape(len(ends), NUM_SPARSE).T
    out.cat_missing[:, rows] = cat_missing.T
    return True


def _field_starts(ends: np.ndarray, line_starts: np.ndarray, lo: int, count: int) -> np.ndarray:
    """[n, count] start offsets of fields lo .. lo + count - 1 from the grid of field ends."""
    out = np.empty((len(ends), count), dtype=np.int64)
    if lo == 0:
        out[:, 0] = line_starts
        out[:, 1:] = ends[:, : count - 1] + 1
    else:
        out[:] = ends[:, lo - 1 : lo - 1 + count] + 1
    return out


def _dense_fields(
    buf: np.ndarray, words: np.ndarray, starts: np.ndarray, ends: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """[n, 13] field bounds -> (int64 values, missing), or None when one is not an integer.

    Each field's last 8 bytes are read as one word; XOR with '0' turns its digits into their
    values, the bytes before the digits (of the previous field) are masked to 0 (a missing field
    is all mask, so it reads 0), any byte then above 9 means "not a digit", and three SWAR steps
    add the digits up."""
    width = ends - starts
    missing = width == 0
    neg = buf[starts] == 45  # '-' (a missing field "starts" at its delimiter: never '-')
    digits = width - neg
    if digits.max() > 18 or (neg & (digits == 0)).any():
        return None
    x = words[ends - 8]  # the 8 bytes before the field's end; the digits are the last ones
    x ^= _ZEROS
    x &= _DIGIT_BYTES[np.minimum(digits, 8)]
    bad = x + _SIXES  # a byte above 9 (not a digit) has its high nibble set here or in x
    bad |= x
    bad &= _HIGH
    if bad.any():
        return None
    t = x * np.uint64(10)
    x >>= np.uint64(8)
    x += t
    x &= np.uint64(0x00FF00FF00FF00FF)
    t = x * np.uint64(100)
    x >>= np.uint64(16)
    x += t
    x &= np.uint64(0x0000FFFF0000FFFF)
    t = x * np.uint64(10000)
    x >>= np.uint64(32)
    x += t
    x &= np.uint64(0xFFFFFFFF)
    values = x.view(np.int64)
    long = np.flatnonzero(digits > 8)
    if len(long):
        flat_s, flat_e = starts.ravel(), ends.ravel()
        for i in long:
            text = buf[flat_s[i] : flat_e[i]].tobytes()
            if not _DENSE_RE.match(text):
                return None
            values.flat[i] = abs(int(text))
    np.negative(values, out=values, where=neg)
    return values, missing


def _read_fast(data: bytes, labelled: bool) -> tuple[pa.Table, list[tuple[int, str]]]:
    """pyarrow parse with typed columns; rows with a wrong field count are set aside."""
    names = (["label"] if labelled else []) + DENSE_NAMES + SPARSE_NAMES
    invalid: list[tuple[int, str]] = []

    def handler(row: pacsv.InvalidRow) -> str:
        invalid.append((row.number, row.text))
        return "skip"

    types = {n: pa.int64() for n in names[: len(names) - NUM_SPARSE]}
    types.update({n: pa.binary() for n in SPARSE_NAMES})
    table = pacsv.read_csv(
        pa.BufferReader(data),
        read_options=pacsv.ReadOptions(
            column_names=names, use_threads=False, block_size=max(1 << 20, len(data) + 1)
        ),
        parse_options=pacsv.ParseOptions(
            delimiter="\t", quote_char=False, double_quote=False, escape_char=False,
            ignore_empty_lines=False, invalid_row_handler=handler,
        ),
        convert_options=pacsv.ConvertOptions(
            column_types=types, null_values=[""], strings_can_be_null=False
        ),
    )  # fmt: skip
    return table, invalid


def decode_hex(arr: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """8-hex-digit binary values -> (uint32 values, missing mask, invalid mask), vectorised."""
    n = len(arr)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32)[arr.offset : arr.offset + n + 1]
    lengths = np.diff(offsets)
    missing = lengths == 0
    invalid = ~(missing | (lengths == 8))
    values = np.zeros(n, dtype=np.uint32)
    rows = np.flatnonzero(lengths == 8)
    if len(rows) == 0:
        return values, missing, invalid
    buf = np.frombuffer(arr.buffers()[2], dtype=np.uint8)
    if len(rows) * 8 == offsets[-1] - offsets[0]:  # only empty or 8-byte values: contiguous
        raw = buf[offsets[0] : offsets[-1]].reshape(-1, 8)
    else:
        raw = buf[offsets[rows][:, None] + np.arange(8)]
    nib = _HEX_LUT[raw]  # [m, 8]
    if nib.max() == 255:
        invalid[rows] |= (nib == 255).any(axis=1)
    packed = (nib[:, 0::2] << 4) | nib[:, 1::2]  # [m, 4] big-endian bytes
    values[rows] = packed.view(">u4").ravel()
    return values, missing, invalid


def _columns(
    table: pa.Table, lines: np.ndarray, labelled: bool, data: bytes, first_line: int
) -> ParsedBlock:
    """Typed pyarrow columns -> ParsedBlock; bad labels and hex ids become rejects."""
    n = table.num_rows
    table = table.combine_chunks()
    dense = np.empty((NUM_DENSE, n), dtype=np.int64)
    dense_missing = np.empty((NUM_DENSE, n), dtype=bool)
    for j, name in enumerate(DENSE_NAMES):
        col = table.column(name).chunk(0) if n else pa.array([], pa.int64())
        dense_missing[j] = col.is_null().to_numpy(zero_copy_only=False)
        dense[j] = pc.fill_null(col, 0).to_numpy()
    cats = np.empty((NUM_SPARSE, n), dtype=np.uint32)
    cat_missing = np.empty((NUM_SPARSE, n), dtype=bool)
    bad_hex = np.zeros(n, dtype=bool)
    for f, name in enumerate(SPARSE_NAMES):
        col = table.column(name).chunk(0) if n else pa.array([], pa.binary())
        cats[f], cat_missing[f], bad = decode_hex(col)
        bad_hex |= bad
    if labelled and n:
        label = pc.fill_null(table.column("label").chunk(0), -1).to_numpy()
    else:
        label = np.zeros(n, dtype=np.int64)
    bad_label = (label != 0) & (label != 1)
    block = ParsedBlock(lines, label.astype(np.int8), dense, dense_missing, cats, cat_missing)
    bad = bad_label | bad_hex
    if bad.any():
        texts = _line_texts(data, lines[bad] - first_line)
        empty = bad_label & dense_missing.all(axis=0) & cat_missing.all(axis=0)
        for i, text in zip(np.flatnonzero(bad), texts, strict=True):
            reason = (
                "empty_line" if empty[i] else "invalid_label" if bad_label[i] else "invalid_hex"
            )
            block.rejects.append((int(lines[i]), reason, text))
        block = block.take(~bad)
    return block


def _line_texts(data: bytes, index: np.ndarray) -> list[bytes]:
    """The text of lines `index` (0-based within the chunk), without the line ending."""
    ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10)
    starts = np.concatenate([[0], ends + 1])
    ends = np.concatenate([ends, [len(data)]])
    return [data[starts[i] : ends[i]].rstrip(b"\r") for i in index]


def _careful(
    texts: list[bytes],
    first_line: int,
    labelled: bool,
    rows_in: int,
    numbers: np.ndarray | None = None,
) -> ParsedBlock:
    """Per-line Python validation and repair; clean lines go through the fast path."""
    if numbers is None:
        numbers = np.arange(first_line, first_line + len(texts), dtype=np.int64)
    n_fields = NUM_DENSE + NUM_SPARSE + (1 if labelled else 0)
    clean: list[bytes] = []
    kept: list[int] = []
    rejects: list[tuple[int, str, bytes]] = []
    repaired: dict[str, int] = {}
    for number, text in zip(numbers.tolist(), texts, strict=True):
        text = text.rstrip(b"\r")
        fields, reason, repair = check_line(text, n_fields, labelled)
        if reason:
            rejects.append((number, reason, text))
            continue
        if repair:
            repaired[repair] = repaired.get(repair, 0) + 1
        clean.append(b"\t".join(fields))
        kept.append(number)
    block = _empty(labelled) if not clean else None
    if clean:
        table, invalid = _read_fast(b"\n".join(clean) + b"\n", labelled)
        assert not invalid and table.num_rows == len(clean), "sanitised lines must parse"
        block = _columns(table, np.array(kept, dtype=np.int64), labelled, b"", 0)
        assert not block.rejects, "sanitised lines must validate"
    block.rejects, block.repaired, block.rows_in = rejects, repaired, rows_in
    return block


def check_line(
    text: bytes, n_fields: int, labelled: bool
) -> tuple[list[bytes], str | None, str | None]:
    """(fields, reject reason or None, repair applied or None) for one line without its ending."""
    if not text.strip():
        return [], "empty_line", None
    fields = text.split(b"\t")
    repair = None
    if len(fields) > n_fields:
        if any(fields[n_fields:]):
            return fields, "field_count", None
        fields, repair = fields[:n_fields], "extra_empty_fields_dropped"
    elif len(fields) < n_fields:
        fields, repair = fields + [b""] * (n_fields - len(fields)), "trailing_empty_fields_added"
    if labelled and fields[0] not in (b"0", b"1"):
        return fields, "invalid_label", None
    start = 1 if labelled else 0
    if any(v and not _DENSE_RE.match(v) for v in fields[start : start + NUM_DENSE]):
        return fields, "invalid_dense", None
    if any(v and not _HEX_RE.match(v) for v in fields[start + NUM_DENSE :]):
        return fields, "invalid_hex", None
    return fields, None, repair


def _empty(labelled: bool) -> ParsedBlock:
    z = np.zeros
    return ParsedBlock(
        z(0, np.int64), z(0, np.int8), z((NUM_DENSE, 0), np.int64), z((NUM_DENSE, 0), bool),
        z((NUM_SPARSE, 0), np.uint32), z((NUM_SPARSE, 0), bool),
    )  # fmt: skip


def _merge(a: ParsedBlock, b: ParsedBlock) -> ParsedBlock:
    """Rows of both blocks in line order; rejects and repairs of both."""
    order = np.argsort(np.concatenate([a.lines, b.lines]), kind="stable")

    def cat(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.concatenate([x, y], axis=-1)[..., order]

    out = ParsedBlock(
        cat(a.lines, b.lines), cat(a.label, b.label), cat(a.dense, b.dense),
        cat(a.dense_missing, b.dense_missing), cat(a.cats, b.cats),
        cat(a.cat_missing, b.cat_missing),
    )  # fmt: skip
    out.rejects = sorted(a.rejects + b.rejects)
    out.repaired = {k: a.repaired.get(k, 0) + b.repaired.get(k, 0) for k in a.repaired | b.repaired}
    return out
