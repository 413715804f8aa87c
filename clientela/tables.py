"""Reading CSV and JSON Lines files row by row, every problem named with file, line, field."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

Model = TypeVar("Model", bound=BaseModel)


class ImportFileError(ValueError):
    """The file cannot be read at all (missing, unknown format, bad header): nothing imported."""


@dataclass
class RowError:
    path: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}"
        return (
            f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        )


def number_or_text(value: str) -> int | float | str:
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def read_rows(
    path: Path, *, columns: set[str], required: set[str], prefix: str | None = None
) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    """Rows as dicts (``<prefix><name>`` columns gathered under "attributes"), by line."""
    if not path.is_file():
        raise ImportFileError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        yield from _csv_rows(path, columns, required, prefix)
    elif suffix in (".jsonl", ".ndjson"):
        yield from _jsonl_rows(path, prefix)
    else:
        raise ImportFileError(f"{path}: unknown format {suffix!r}; use .csv or .jsonl")


def _csv_rows(
    path: Path, columns: set[str], required: set[str], prefix: str | None
) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        unknown = [h for h in header if h not in columns and not (prefix and h.startswith(prefix))]
        missing = sorted(required - set(header))
        if unknown or missing:
            problem = (
                f"unknown column(s) {', '.join(map(repr, unknown))}"
                if unknown
                else f"missing the column(s) {', '.join(map(repr, missing))}"
            )
            extra = f" and {prefix}<name> for free attributes" if prefix else ""
            raise ImportFileError(
                f"{path}:1: {problem}; columns are {', '.join(sorted(columns))}{extra}"
            )
        line = 1
        for row in reader:
            start, line = line + 1, reader.line_num
            if None in row:
                yield (
                    start,
                    RowError(str(path), start, "", "more values than columns in the header"),
                )
                continue
            record: dict[str, Any] = {}
            attributes: dict[str, Any] = {}
            for key, value in row.items():
                if value is None or value == "":
                    continue
                if prefix and key.startswith(prefix):
                    attributes[key[len(prefix) :]] = number_or_text(value)
                else:
                    record[key] = value
            if attributes:
                record["attributes"] = attributes
            yield start, record


def _jsonl_rows(path: Path, prefix: str | None) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    with path.open(encoding="utf-8") as fh:
        for number, text in enumerate(fh, start=1):
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as exc:
                message = f"not valid JSON ({exc.msg} at column {exc.colno})"
                yield number, RowError(str(path), number, "", message)
                continue
            if not isinstance(record, dict):
                yield number, RowError(str(path), number, "", "each line must be a JSON object")
                continue
            if prefix:
                attributes = dict(record.pop("attributes", None) or {})
                for key in [k for k in record if k.startswith(prefix)]:
                    attributes[key[len(prefix) :]] = record.pop(key)
                if attributes:
                    record["attributes"] = attributes
            yield number, record


def validated(
    path: Path, rows: Iterator[tuple[int, dict[str, Any] | RowError]], model: type[Model]
) -> Iterator[tuple[int, Model | RowError]]:
    """Each row checked against ``model``; every field error becomes a RowError."""
    for line, record in rows:
        if isinstance(record, RowError):
            yield line, record
            continue
        try:
            yield line, model.model_validate(record)
        except ValidationError as exc:
            for err in exc.errors():
                name = ".".join(str(p) for p in err["loc"]) or "row"
                message = err["msg"].removeprefix("Value error, ")
                yield line, RowError(str(path), line, name, message)
