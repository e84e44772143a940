"""Meter file readers: each yields raw batches in one shape, whatever the vendor layout.

A raw batch is a ``pyarrow.Table`` with columns ``meter_id`` (string), ``ts`` (string or
timestamp), ``value`` (string or float64) and ``line`` (int64, the 1-based line of the row in its
file, the header being line 1; for Parquet, the row number + 1). Rows that cannot be split into
fields come back separately as ``(line, text, reason)``. Files are read in blocks, never whole.

Layouts:
- ``long``: meter id, timestamp, value; column names configurable (CSV, gzip CSV or Parquet).
- ``lcl``: Low Carbon London, either the datastore file (``LCLid,stdorToU,DateTime,KWH/hh (per
  half hour) `` with a trailing space and ``Null`` strings) or the per-block redistribution
  (``LCLid,tstp,energy(kWh/hh)``); detected from the header.
- ``wide``: one timestamp column and one column per meter (UCI ElectricityLoadDiagrams20112014:
  ``;`` separator, ``,`` decimal, kW per 15 min), melted to long.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

BLOCK_BYTES = 16 << 20

LCL_LAYOUTS = {
    "datastore": ("LCLid", "DateTime", "KWH/hh (per half hour)"),
    "redistribution": ("LCLid", "tstp", "energy(kWh/hh)"),
}


class InputError(ValueError):
    """Bad input that cannot be quarantined row by row: names the file, the line and the fix."""


def _open(path: Path):
    if str(path).endswith(".gz"):
        return pa.input_stream(str(path), compression="gzip")
    return pa.input_stream(str(path))


def _header(path: Path, delimiter: str) -> list[str]:
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            first = fh.readline()
    except (OSError, EOFError, zlib.error) as e:
        raise InputError(f"{path}: cannot read ({e}); is the file complete? re-download or re-export it") from None
    if not first.strip():
        raise InputError(f"{path}: the file is empty (no header line); expected a CSV with a header row")
    try:
        text = first.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"{path}, line 1: the header is not UTF-8 text; re-export the file as UTF-8") from None
    return [c.strip().strip("\"").strip() for c in text.rstrip("\r\n").split(delimiter)]


def _require(path: Path, header: list[str], needed: list[str], delimiter: str, hint: str = "") -> None:
    missing = [c for c in needed if c not in header]
    if not missing:
        return
    if len(header) == 1:
        other = ";" if delimiter == "," else ","
        raise InputError(f"{path}, line 1: found a single column {header[0][:60]!r} - is the delimiter {other!r}? "
                         f"pass --delimiter '{other}' (expected columns {needed})")
    raise InputError(f"{path}, line 1: missing column(s) {missing}; found {header}. {hint}".strip())


def _csv_batches(path: Path, delimiter: str, invalid: list) -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
    """Stream a CSV (plain or gzip) as all-binary columns with each row's line number; malformed rows go to ``invalid``."""
    skipped: list[int] = []

    def on_invalid(row):
        skipped.append(row.number)
        invalid.append((row.number, (row.text or "")[:200], f"malformed_row: expected {row.expected_columns} fields, got {row.actual_columns}"))
        return "skip"

    header = _header(path, delimiter)
    # single-threaded parsing keeps the physical line numbers of skipped rows known
    read = pcsv.ReadOptions(block_size=BLOCK_BYTES, use_threads=False, column_names=header, skip_rows=1)
    # no quoting: every physical line is one row. With quoting, one stray '"' swallowed the following lines
    # into a single value (found by the property test: four data lines came in as three rows); quotes
    # around values (UCI exports) are stripped below instead
    parse = pcsv.ParseOptions(delimiter=delimiter, quote_char=False, invalid_row_handler=on_invalid)
    convert = pcsv.ConvertOptions(column_types={c: pa.binary() for c in header}, strings_can_be_null=False,
                                  quoted_strings_can_be_null=False)
    offset = 2  # line of the first data row
    try:
        reader = pcsv.open_csv(_open(path), read_options=read, parse_options=parse, convert_options=convert)
        for batch in reader:
            end, used = offset + batch.num_rows, []
            for s in sorted(x for x in skipped if x is not None and x >= offset):
                if s < end:
                    used.append(s)
                    end += 1
            lines = np.arange(offset, end, dtype=np.int64)
            if used:
                lines = lines[~np.isin(lines, used)]
            unquoted = [pc.replace_substring(c, pattern='"', replacement="") for c in batch.columns]
            yield pa.RecordBatch.from_arrays(unquoted, names=batch.schema.names), lines
            offset = end
    except (pa.ArrowInvalid, OSError, EOFError, zlib.error) as e:
        msg = str(e).splitlines()[0][:200]
        what = "truncated or corrupt gzip" if str(path).endswith(".gz") else "unreadable CSV"
        raise InputError(f"{path}, after line {offset - 1}: {what} ({msg}); re-download or re-export the file") from None


def _as_string(col: pa.Array, lines: pa.Array, bad: list, field: str) -> tuple[pa.Array, np.ndarray]:
    """binary -> string; rows with invalid UTF-8 are flagged (returns array, valid mask)."""
    try:
        return pc.cast(col, pa.string()), np.ones(len(col), bool)
    except pa.ArrowInvalid:
        ok = np.ones(len(col), bool)
        py = col.to_pylist()
        for i, b in enumerate(py):
            try:
                b.decode("utf-8")
            except (UnicodeDecodeError, AttributeError):
                ok[i] = False
                bad.append((int(lines[i].as_py()), repr(b)[:200], f"invalid_utf8 in {field}"))
        fixed = pa.array([b.decode("utf-8") if k else "" for b, k in zip(py, ok)], pa.string())
        return fixed, ok


def _finish(meter, ts, value, lines, invalid) -> pa.Table:
    ok = np.ones(len(lines), bool)
    cols = {}
    for name, col in (("meter_id", meter), ("ts", ts), ("value", value)):
        if pa.types.is_binary(col.type):
            col, good = _as_string(col, lines, invalid, name)
            ok &= good
        cols[name] = col
    table = pa.table({**cols, "line": lines})
    return table if ok.all() else table.filter(pa.array(ok))


def check_file(path: Path, fmt: str, *, meter_col: str = "meter_id", time_col: str = "timestamp",
               value_col: str = "kwh", delimiter: str | None = None) -> tuple[list[str], tuple | None, str]:
    """File-level checks before any row is read; returns (header, columns to take or None for wide, delimiter).

    Raises InputError naming the file, the line and the fix.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_file() and path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty (0 bytes); expected meter readings")
    delimiter = delimiter or (";" if fmt == "wide" else ",")
    if path.suffix == ".parquet" or path.is_dir():
        if fmt != "long":
            raise InputError(f"{path}: Parquet input is read with --format long (got --format {fmt})")
        try:
            header = pq.ParquetFile(path).schema_arrow.names
        except (pa.ArrowInvalid, OSError) as e:
            raise InputError(f"{path}: not a readable Parquet file ({e}); re-export it") from None
        _require(path, header, [meter_col, time_col, value_col], delimiter, "pass --meter-col/--time-col/--value-col to name them")
        return header, (meter_col, time_col, value_col), delimiter
    header = _header(path, delimiter)
    if fmt == "long":
        _require(path, header, [meter_col, time_col, value_col], delimiter, "pass --meter-col/--time-col/--value-col to name them")
        return header, (meter_col, time_col, value_col), delimiter
    if fmt == "lcl":
        layout = next((k for k, cols in LCL_LAYOUTS.items() if all(c in header for c in cols)), None)
        if layout is None:
            _require(path, header, list(LCL_LAYOUTS["datastore"]), delimiter,
                     f"an LCL file has either {list(LCL_LAYOUTS['datastore'])} (datastore) or "
                     f"{list(LCL_LAYOUTS['redistribution'])} (per-block files)")
        return header, LCL_LAYOUTS[layout], delimiter
    if fmt == "wide":
        if len(header) < 2:
            _require(path, header, ["<timestamp>", "<meter columns>"], delimiter)
        return header, None, delimiter
    raise InputError(f"unknown --format {fmt!r}; use long, lcl or wide")


def read_raw(path: Path, fmt: str, *, meter_col: str = "meter_id", time_col: str = "timestamp",
             value_col: str = "kwh", delimiter: str | None = None) -> Iterator[tuple[pa.Table, list]]:
    """Yield (raw batch, rejected rows) for one file. See the module docstring for the shapes."""
    path = Path(path)
    header, names, delimiter = check_file(path, fmt, meter_col=meter_col, time_col=time_col, value_col=value_col,
                                          delimiter=delimiter)
    if path.suffix == ".parquet" or path.is_dir():
        pf = pq.ParquetFile(path)
        offset = 1
        for batch in pf.iter_batches(batch_size=1 << 20, columns=list(names)):
            n = batch.num_rows
            lines = pa.array(np.arange(offset, offset + n, dtype=np.int64))
            offset += n
            meter = pc.cast(batch.column(0), pa.string()) if not pa.types.is_dictionary(batch.column(0).type) \
                else pc.cast(batch.column(0).dictionary_decode(), pa.string())
            value = batch.column(2)
            value = pc.cast(value, pa.float64()) if pa.types.is_integer(value.type) or pa.types.is_floating(value.type) else value
            invalid: list = []
            yield _finish(meter, batch.column(1), value, lines, invalid), invalid
        return

    invalid: list = []
    for batch, line_numbers in _csv_batches(path, delimiter, invalid):
        n = batch.num_rows
        lines = pa.array(line_numbers)
        if names is not None:
            idx = [header.index(c) for c in names]
            table = _finish(batch.column(idx[0]), batch.column(idx[1]), batch.column(idx[2]), lines, invalid)
        else:  # wide: melt the meter columns
            ts = batch.column(0)
            parts = []
            for j, meter in enumerate(header[1:], start=1):
                parts.append(_finish(pa.array([meter] * n, pa.string()), ts, batch.column(j), lines, invalid))
            table = pa.concat_tables(parts)
            table = table.set_column(2, "value", pc.replace_substring(table.column("value"), ",", "."))
        out = list(invalid)
        invalid.clear()
        yield table, out
    if invalid:
        yield pa.table({"meter_id": pa.array([], pa.string()), "ts": pa.array([], pa.string()),
                        "value": pa.array([], pa.string()), "line": pa.array([], pa.int64())}), invalid


def bucket_of(meters: pa.Array, k: int) -> np.ndarray:
    """Stable bucket 0..k-1 of each meter id (crc32), computed over the distinct ids only."""
    enc = pc.dictionary_encode(meters).combine_chunks() if isinstance(meters, pa.ChunkedArray) else pc.dictionary_encode(meters)
    lut = np.array([zlib.crc32(m.encode()) % k for m in enc.dictionary.to_pylist()], dtype=np.int32)
    return lut[enc.indices.to_numpy(zero_copy_only=False)] if len(lut) else np.zeros(len(meters), np.int32)
