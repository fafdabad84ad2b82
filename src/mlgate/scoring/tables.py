"""Tables read and written in chunks: CSV (always) and Parquet (pyarrow, the ``client``
extra), so that a file larger than memory streams through.

A :class:`Chunk` holds consecutive rows column by column: CSV cells as text (a blank
cell is a missing value), Parquet columns as pyarrow arrays (a null is a missing value).
"""

from __future__ import annotations

import csv
import io
import math
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal, Protocol

import numpy as np

Format = Literal["csv", "parquet"]
PARQUET_SUFFIXES = (".parquet", ".pq")


class TableError(ValueError):
    """The file cannot be read as a table (message names the file and the line)."""


def detect_format(path: Path | str, given: str | None = None) -> Format:
    """``given`` (``csv``/``parquet``), else from the suffix (``.parquet``/``.pq``)."""
    if given in ("csv", "parquet"):
        return given  # type: ignore[return-value]
    return "parquet" if str(path).lower().endswith(PARQUET_SUFFIXES) else "csv"


def require_pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise TableError("Parquet files need pyarrow: pip install 'mlgate[client]'") from None
    return pyarrow


@dataclass(frozen=True)
class Chunk:
    """Rows ``[start, start + size)`` of a table (0-based, header excluded)."""

    start: int
    size: int
    columns: dict[str, Any]
    """Name -> list of cell texts (CSV) or a pyarrow array (Parquet)."""
    lines: list[int] | None = None
    """CSV: the file line of each row (for error messages)."""

    def where(self, row: int) -> str:
        """Where row ``row`` of this chunk is in the file, for messages."""
        number = self.start + row
        if self.lines is not None:
            return f"line {self.lines[row]} (data row {number + 1})"
        return f"data row {number + 1}"

    def text_column(self, name: str) -> list[str]:
        """A column as text (for device ids)."""
        values = self.columns[name]
        if isinstance(values, list):
            return [v.strip() for v in values]
        return ["" if v is None else str(v) for v in values.to_pylist()]


class CellError(ValueError):
    def __init__(self, row: int, column: str, value: Any) -> None:
        super().__init__(f"column {column!r}: {value!r} is not a number")
        self.row = row
        self.column = column


def _parse_texts(cells: list[str], column: str) -> np.ndarray:
    """Cell texts as floats; a blank cell is NaN (a missing value)."""
    try:  # numpy parses a column of number texts in C
        return np.asarray(cells).astype(np.float64)
    except ValueError:
        pass
    out = np.empty(len(cells), dtype=np.float64)
    for i, cell in enumerate(cells):
        text = cell.strip()
        if not text:
            out[i] = math.nan
            continue
        try:
            out[i] = float(text)
        except ValueError:
            raise CellError(i, column, cell) from None
    return out


def feature_matrix(chunk: Chunk, columns: Sequence[str]) -> np.ndarray:
    """The chunk's ``columns`` as a float64 matrix (missing values NaN); a cell that is
    not a number raises :class:`CellError` with its row and column."""
    matrix = np.empty((chunk.size, len(columns)), dtype=np.float64)
    for j, name in enumerate(columns):
        values = chunk.columns[name]
        if isinstance(values, list):
            matrix[:, j] = _parse_texts(values, name)
            continue
        import pyarrow as pa

        kind = values.type
        numeric = pa.types.is_integer(kind) or pa.types.is_floating(kind)
        if numeric or pa.types.is_boolean(kind) or pa.types.is_null(kind):
            # Nulls become NaN: missing values, as empty CSV cells.
            matrix[:, j] = values.cast(pa.float64()).to_numpy(zero_copy_only=False)
        else:
            texts = ["" if v is None else str(v) for v in values.to_pylist()]
            matrix[:, j] = _parse_texts(texts, name)
    return matrix


class TableReader(Protocol):
    header: list[str]
    total_rows: int | None
    """Known up front (Parquet), else None (CSV: progress is counted in bytes)."""
    total_bytes: int | None

    @property
    def bytes_read(self) -> int: ...

    def chunks(self, size: int) -> Iterator[Chunk]: ...

    def close(self) -> None: ...


class _CountingReader(io.RawIOBase):
    """A binary file that counts the bytes read from it (CSV progress)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self.raw.readinto(buffer)  # type: ignore[attr-defined]
        self.count += n or 0
        return n or 0

    def close(self) -> None:
        self.raw.close()
        super().close()


class CsvReader:
    """A CSV file with a header row, read ``size`` rows at a time.

    Header names are stripped (the original CICIDS2017 files have leading spaces); a
    UTF-8 byte order mark is ignored; blank lines are skipped; a row with a different
    number of cells than the header is an error naming its line.
    """

    def __init__(self, path: Path, *, delimiter: str = ",") -> None:
        self.path = path
        try:
            raw = path.open("rb")
        except OSError as exc:
            raise TableError(f"cannot read {path}: {exc.strerror}") from None
        self.total_bytes: int | None = path.stat().st_size
        self.total_rows: int | None = None
        self._counter = _CountingReader(raw)
        self._text = io.TextIOWrapper(
            io.BufferedReader(self._counter, buffer_size=1 << 20),
            encoding="utf-8-sig",
            newline="",
        )
        self._reader = csv.reader(self._text, delimiter=delimiter)
        self.delimiter = delimiter
        try:
            header = next(self._reader, None)
        except (UnicodeDecodeError, csv.Error) as exc:
            raise TableError(f"{path} is not a UTF-8 CSV file: {exc}") from None
        if header is None:
            raise TableError(f"{path} is empty: expected a header row")
        self.header = [h.strip() for h in header]

    @property
    def bytes_read(self) -> int:
        return self._counter.count

    def chunks(self, size: int) -> Iterator[Chunk]:
        width = len(self.header)
        start = 0
        rows: list[list[str]] = []
        lines: list[int] = []
        reader = self._reader
        try:
            for row in reader:
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                if len(row) != width:
                    raise TableError(
                        f"{self.path}, line {reader.line_num}: {len(row)} cells but the "
                        f"header has {width} (is the delimiter {self.delimiter!r} right?)"
                    )
                rows.append(row)
                lines.append(reader.line_num)
                if len(rows) >= size:
                    yield self._chunk(start, rows, lines)
                    start += len(rows)
                    rows, lines = [], []
        except (UnicodeDecodeError, csv.Error) as exc:
            raise TableError(f"{self.path}, line {reader.line_num}: {exc}") from None
        if rows:
            yield self._chunk(start, rows, lines)

    def _chunk(self, start: int, rows: list[list[str]], lines: list[int]) -> Chunk:
        columns = {name: [r[j] for r in rows] for j, name in enumerate(self.header)}
        return Chunk(start, len(rows), columns, lines)

    def close(self) -> None:
        self._text.close()


class ParquetReader:
    """A Parquet file, read in record batches of ``size`` rows."""

    def __init__(self, path: Path) -> None:
        require_pyarrow()
        import pyarrow.parquet as pq

        self.path = path
        try:
            self._file = pq.ParquetFile(path)
        except (OSError, ValueError) as exc:
            raise TableError(f"cannot read {path} as Parquet: {exc}") from None
        self.header = [name.strip() for name in self._file.schema_arrow.names]
        self._names = list(self._file.schema_arrow.names)
        self.total_rows: int | None = self._file.metadata.num_rows
        self.total_bytes: int | None = None
        self._read = 0

    @property
    def bytes_read(self) -> int:
        return self._read

    def chunks(self, size: int) -> Iterator[Chunk]:
        start = 0
        for batch in self._file.iter_batches(batch_size=size):
            columns = {name: batch.column(j) for j, name in enumerate(self.header)}
            yield Chunk(start, batch.num_rows, columns)
            start += batch.num_rows

    def close(self) -> None:
        self._file.close()


def open_reader(path: Path, fmt: Format, *, delimiter: str = ",") -> TableReader:
    if fmt == "parquet":
        return ParquetReader(path)
    return CsvReader(path, delimiter=delimiter)


# -- writing ---------------------------------------------------------------------------


def _texts(values: Any) -> list[str]:
    """A column as CSV cell texts: text as is, floats round-trip exact (NaN blank),
    booleans ``true``/``false``, nulls blank."""
    if isinstance(values, list):
        return values
    if isinstance(values, np.ndarray):
        if values.dtype == np.bool_:
            return ["true" if v else "false" for v in values.tolist()]
        if values.dtype.kind == "f":
            return ["" if v != v else repr(v) for v in values.tolist()]
        if values.dtype.kind in "iu":
            return [str(v) for v in values.tolist()]
        return ["" if v is None else str(v) for v in values.tolist()]
    return ["" if v is None else str(v) for v in values.to_pylist()]


class CsvWriter:
    """Scored rows as CSV: the kept input columns, then the result columns."""

    def __init__(self, target: Path | None, *, delimiter: str = ",") -> None:
        self._own = target is not None
        self._file: IO[str] = (
            target.open("w", encoding="utf-8", newline="") if target else sys.stdout
        )
        self._writer = csv.writer(self._file, delimiter=delimiter, lineterminator="\n")
        self._header_written = False

    def write(self, inputs: dict[str, Any], results: dict[str, np.ndarray], size: int) -> None:
        if not self._header_written:
            self._writer.writerow([*inputs, *results])
            self._header_written = True
        columns = [_texts(values) for values in (*inputs.values(), *results.values())]
        self._writer.writerows(zip(*columns, strict=True))

    def close(self) -> None:
        if self._own:
            self._file.close()
        else:
            self._file.flush()


class ParquetWriter:
    """Scored rows as Parquet: input columns (CSV text kept as text) and typed results."""

    def __init__(self, target: Path) -> None:
        require_pyarrow()
        self.target = target
        self._writer: Any = None

    def write(self, inputs: dict[str, Any], results: dict[str, np.ndarray], size: int) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        arrays: dict[str, Any] = {}
        for name, values in inputs.items():
            is_text = isinstance(values, list)
            arrays[name] = pa.array(values, type=pa.string()) if is_text else values
        for name, array in results.items():
            arrays[name] = pa.array(array.tolist() if array.dtype == object else array)
        table = pa.table(arrays)
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.target, table.schema)
        self._writer.write_table(table)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


class TableWriter(Protocol):
    def write(self, inputs: dict[str, Any], results: dict[str, np.ndarray], size: int) -> None: ...

    def close(self) -> None: ...


def open_writer(target: Path | None, fmt: Format, *, delimiter: str = ",") -> TableWriter:
    """A writer to ``target`` (None: CSV on standard output)."""
    if fmt == "parquet":
        if target is None:
            raise TableError("Parquet output needs a file: pass --output FILE.parquet")
        return ParquetWriter(target)
    return CsvWriter(target, delimiter=delimiter)
