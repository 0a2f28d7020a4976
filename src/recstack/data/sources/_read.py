"""File-reading helpers shared by the sources: every failure becomes a DataError naming file and line.

Tables are parsed by polars with the wanted dtypes; when that fails, the file is re-read as strings
to find the first offending line and column (the slow path runs only on bad input).
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from recstack.errors import DataError

if TYPE_CHECKING:
    from polars._typing import PolarsDataType  # a dtype class (pl.Int64) or instance (pl.List(pl.String))

_SPLIT_CHAR = "\x1f"  # ASCII unit separator: stands in for multi-character separators such as "::"


def require_file(path: Path) -> Path:
    """`path` must exist and hold at least one byte."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    return path


def find_file(folder: Path, *patterns: str) -> Path | None:
    """First file in `folder` matching one of the glob `patterns` (tried in order), else None."""
    for pattern in patterns:
        matches = sorted(p for p in folder.glob(pattern) if p.is_file())
        if matches:
            return matches[0]
    return None


def read_bytes(path: Path, encoding: str = "utf8") -> bytes:
    """File content as UTF-8 bytes; `.gz` is decompressed; encoding "auto" tries UTF-8 then latin-1."""
    data = require_file(path).read_bytes()
    if path.suffix == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise DataError(f"{path}: not a valid gzip file ({exc}); truncated download?") from exc
        if not data:
            raise DataError(f"{path}: file is empty")
    if encoding == "auto":
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:  # GroupLens .dat / u.item files are latin-1
            data = data.decode("latin-1").encode("utf-8")
    return data


def read_table(
    path: Path,
    *,
    separator: str,
    dtypes: Mapping[str, PolarsDataType],
    names: list[str] | None = None,
    required: Iterable[str] = (),
    quoted: bool = False,
    encoding: str = "utf8",
    infer_types: bool = False,
    null_values: list[str] | None = None,
) -> pl.DataFrame:
    """Parse a delimited text file; columns not in `dtypes` stay strings.

    names: None = the first line is a header; else the file has no header and exactly these columns.
    required: columns that must exist and hold no missing value. Blank lines are skipped.
    infer_types: let polars infer the other columns' types (side tables of features).
    null_values: strings read as missing (besides the empty field).
    Returns the table with a `_line` column (1-based line number in the file) for error messages.
    """
    needs_bytes = len(separator) > 1 or encoding != "utf8" or path.suffix == ".gz"
    source: Path | bytes = read_bytes(path, encoding) if needs_bytes else require_file(path)
    if len(separator) > 1:
        assert isinstance(source, bytes)  # needs_bytes
        source = source.replace(separator.encode(), _SPLIT_CHAR.encode())
    sep = _SPLIT_CHAR if len(separator) > 1 else separator
    options: dict[str, Any] = dict(
        separator=sep,
        quote_char='"' if quoted else None,
        has_header=names is None,
        infer_schema=False,
        null_values=null_values,
    )
    first_line = 2 if names is None else 1
    try:
        present = pl.read_csv(_as_source(source), n_rows=1, truncate_ragged_lines=True, **options).columns
    except pl.exceptions.NoDataError as exc:
        raise DataError(f"{path}: file is empty") from exc
    except pl.exceptions.PolarsError as exc:
        raise DataError(f"{path}: cannot parse ({exc})") from exc
    expected = names if names is not None else list(required)
    if names is not None and len(present) != len(names):
        raise DataError(
            f"{path}: line 1 has {len(present)} field(s) separated by {separator!r}, expected "
            f"{len(names)} ({', '.join(names)}); wrong delimiter or wrong file?"
        )
    columns = names or present
    missing = [c for c in expected if c not in columns]
    if missing:
        hint = " (a single column: wrong delimiter?)" if len(columns) == 1 else ""
        raise DataError(f"{path}: missing column {missing[0]!r}; columns present: {', '.join(columns)}{hint}")
    typed = {c: t for c, t in dtypes.items() if c in columns}
    typed_options = {**options, "infer_schema": infer_types, "infer_schema_length": None}
    try:
        frame = pl.read_csv(_as_source(source), new_columns=names, schema_overrides=typed, **typed_options)
    except pl.exceptions.PolarsError as exc:
        frame = _locate_parse_error(path, source, options, names, typed, first_line, separator, exc)
    frame = frame.with_row_index("_line", offset=first_line)
    data_columns = [c for c in frame.columns if c != "_line"]
    frame = frame.filter(~pl.all_horizontal(pl.col(data_columns).is_null()))  # blank lines
    if frame.height == 0:
        raise DataError(f"{path}: file has no data rows")
    for column in required:
        if frame[column].null_count():
            line = frame.filter(pl.col(column).is_null())["_line"][0]
            raise DataError(f"{path}: line {line}: missing value in column {column!r} (truncated line?)")
    return frame


def _as_source(source: Path | bytes) -> Path | io.BytesIO:
    return io.BytesIO(source) if isinstance(source, bytes) else source


def _locate_parse_error(
    path: Path,
    source: Path | bytes,
    options: dict[str, Any],
    names: list[str] | None,
    typed: dict[str, PolarsDataType],
    first_line: int,
    separator: str,
    exc: Exception,
) -> pl.DataFrame:
    """Slow path after a failed typed read: find the line at fault and raise a precise DataError."""
    try:
        raw = pl.read_csv(_as_source(source), new_columns=names, **options)
    except pl.exceptions.PolarsError:
        if options["quote_char"] is None:
            text = source if isinstance(source, bytes) else path.read_bytes()
            lines = pl.Series(text.decode("utf-8", "replace").split("\n"))
            sep = options["separator"]
            width = lines[first_line - 1].count(sep) + 1 if names is None else len(names)
            too_many = (lines.str.count_matches(sep, literal=True) + 1 > width) & (lines.str.len_chars() > 0)
            if too_many.any():
                line = int(too_many.arg_max()) + 1
                raise DataError(f"{path}: line {line} has more than {width} fields separated by {separator!r}") from exc
        raise DataError(f"{path}: cannot parse ({exc})") from exc
    raw = raw.with_row_index("_line", offset=first_line)
    for column, dtype in typed.items():
        cast = raw[column].cast(dtype, strict=False)
        bad = cast.is_null() & raw[column].is_not_null()
        if bad.any():
            row = int(bad.arg_max())
            raise DataError(
                f"{path}: line {raw['_line'][row]}: column {column!r} has value {raw[column][row]!r}, expected {dtype}"
            ) from exc
    raise DataError(f"{path}: cannot parse ({exc})") from exc


def read_lines(path: Path, encoding: str = "utf8") -> pl.DataFrame:
    """Non-blank lines of a text file as a frame (line: str, _line: 1-based line number)."""
    source: Path | bytes = (
        read_bytes(path, encoding) if (encoding != "utf8" or path.suffix == ".gz") else require_file(path)
    )
    try:
        frame = pl.read_csv(
            _as_source(source),
            has_header=False,
            separator=_SPLIT_CHAR,
            quote_char=None,
            new_columns=["line"],
            infer_schema=False,
        )
    except pl.exceptions.NoDataError as exc:
        raise DataError(f"{path}: file is empty") from exc
    except pl.exceptions.PolarsError as exc:
        raise DataError(f"{path}: cannot read lines ({exc})") from exc
    frame = frame.with_row_index("_line", offset=1).filter(pl.col("line").str.strip_chars().str.len_chars() > 0)
    if frame.height == 0:
        raise DataError(f"{path}: file has no data lines")
    return frame


def read_ndjson(path: Path, schema: Mapping[str, PolarsDataType], required: Iterable[str] = ()) -> pl.DataFrame:
    """JSON-lines file (optionally .gz) with the given fields; extra fields are ignored.

    A field declared Utf8 keeps a list/object value as its JSON text (see `json_text_to_text`).
    """
    lines = read_lines(path)
    try:
        frame = pl.read_ndjson(io.BytesIO("\n".join(lines["line"].to_list()).encode()), schema=schema)
    except pl.exceptions.PolarsError as exc:
        for number, line in zip(lines["_line"], lines["line"]):  # error path only: find the bad line
            try:
                json.loads(line)
            except ValueError as bad:
                raise DataError(f"{path}: line {number}: invalid JSON ({bad})") from exc
        raise DataError(f"{path}: cannot parse JSON lines ({exc})") from exc
    frame = frame.with_columns(lines["_line"])
    for column in required:
        if frame[column].null_count():
            line = frame.filter(pl.col(column).is_null())["_line"][0]
            raise DataError(f"{path}: line {line}: missing field {column!r}")
    return frame


def flatten_json_text(frame: pl.DataFrame, column: str, inner: str = " > ", outer: str = "; ") -> pl.DataFrame:
    """A Utf8 column holding plain text or the JSON text of a list / list of lists -> flat text.

    ["a", "b"] -> "a > b" (inner); [["a", "b"], ["c"]] -> "a > b; c" (outer); plain text stays;
    null -> "". Rows keep their order.
    """
    frame = frame.with_row_index("_order").with_columns(pl.col(column).fill_null(""))
    text = pl.col(column).str.strip_chars_start()
    is_nested = text.str.starts_with("[") & text.str.slice(1).str.strip_chars_start().str.starts_with("[")
    is_list = text.str.starts_with("[") & ~is_nested
    nested = frame.filter(is_nested).with_columns(
        pl.col(column)
        .str.json_decode(pl.List(pl.List(pl.Utf8)))
        .list.eval(pl.element().list.join(inner))
        .list.join(outer)
    )
    flat = frame.filter(is_list).with_columns(pl.col(column).str.json_decode(pl.List(pl.Utf8)).list.join(inner))
    plain = frame.filter(~is_nested & ~is_list)
    return pl.concat([nested, flat, plain]).sort("_order").drop("_order")
