"""YAML documents validated against a model, every problem placed at its file, line and column."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Problem:
    path: str
    line: int
    column: int
    message: str
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}: {self.severity}: {self.message}"


class SpecError(ValueError):
    """Problems that make a document unusable; each names file, line and column."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


class NodeError(ValueError):
    """A node YAML parses but cannot make a value of (an unknown tag, say), with its place."""

    def __init__(self, node: yaml.Node, problem: str) -> None:
        super().__init__(problem)
        self.line, self.column = node.start_mark.line + 1, node.start_mark.column + 1


def _value(node: yaml.Node) -> Any:
    try:
        return yaml.safe_load(yaml.serialize(node))
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc)
        raise NodeError(node, problem) from None


class Positions:
    """Line and column of every node of a YAML document, by path."""

    def __init__(self) -> None:
        self.marks: dict[tuple[Any, ...], tuple[int, int]] = {}
        self.styles: dict[tuple[Any, ...], str | None] = {}

    def build(self, node: yaml.Node, path: tuple[Any, ...] = ()) -> Any:
        self.marks[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, yaml.MappingNode):
            out = {}
            for key_node, value_node in node.value:
                key = _value(key_node)
                self.marks[(*path, key, "__key__")] = (
                    key_node.start_mark.line + 1,
                    key_node.start_mark.column + 1,
                )
                out[key] = self.build(value_node, (*path, key))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(v, (*path, i)) for i, v in enumerate(node.value)]
        self.styles[path] = node.style if isinstance(node, yaml.ScalarNode) else None
        return _value(node)

    def at(self, path: tuple[Any, ...]) -> tuple[int, int]:
        while path and path not in self.marks:
            path = path[:-1]
        return self.marks.get(path, (1, 1))


#: Pydantic's words for a wrong shape, said as what to write instead.
_PLAIN = {
    "model_type": "should be a group of `key: value` lines (a mapping), not {kind}",
    "model_attributes_type": "should be a group of `key: value` lines (a mapping), not {kind}",
    "dict_type": "should be a group of `key: value` lines (a mapping), not {kind}",
    "list_type": "should be a list (lines starting with `- `), not {kind}",
    "time_parsing": "write a time of day as HH:MM, e.g. 09:30 (not {value})",
    "time_type": "write a time of day as HH:MM, e.g. 09:30 (not {value})",
    "date_from_datetime_parsing": "write a date as YYYY-MM-DD, e.g. 2027-03-10 (not {value})",
    "date_parsing": "write a date as YYYY-MM-DD, e.g. 2027-03-10 (not {value})",
    "datetime_parsing": "write a date and time as YYYY-MM-DDTHH:MM, e.g. 2027-03-10T09:00",
    "bool_parsing": "write true or false (not {value})",
    "bool_type": "write true or false (not {value})",
    "int_parsing": "write a whole number (not {value})",
    "float_parsing": "write a number (not {value})",
    "string_type": "write text (not {kind})",
    "missing": "is required here; add it",
}


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"{str(value).lower()}"
    return repr(value) if isinstance(value, str) else str(value)


def plain_message(err: Any) -> str:
    """A validation error as a person writing the file can act on it."""
    template = _PLAIN.get(err["type"])
    if template is None:
        return str(err["msg"]).removeprefix("Value error, ")
    value = err.get("input")
    return template.format(kind=_kind(value), value=_kind(value))


def read_source(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError([Problem(str(path), 1, 1, f"cannot read: {exc.strerror}")]) from None


def load_model(source: str, path: str, model: type[M], docs: str) -> tuple[M, Positions]:
    """Parse YAML keeping positions, then validate; every error is placed in the file."""
    try:
        node = yaml.compose(source)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise SpecError([Problem(path, line, col, f"YAML: {exc.problem}")]) from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow
        at = exc.position
        line, col = source.count("\n", 0, at) + 1, at - source.rfind("\n", 0, at)
        raise SpecError(
            [
                Problem(
                    path,
                    line,
                    col,
                    f"YAML: character U+{exc.character:04X} is not allowed; remove it",
                )
            ]
        ) from None
    except yaml.YAMLError as exc:
        raise SpecError([Problem(path, 1, 1, f"YAML: {exc}")]) from None
    if node is None:
        raise SpecError([Problem(path, 1, 1, "the file is empty")])
    positions = Positions()
    try:
        data = positions.build(node)
    except NodeError as exc:  # a value YAML can parse but not make
        raise SpecError([Problem(path, exc.line, exc.column, f"YAML: {exc}")]) from None
    try:
        return model.model_validate(data), positions
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            line, col = positions.at(loc)
            where = ".".join(str(p) for p in loc)
            message = plain_message(err)
            if err["type"] == "extra_forbidden":
                line, col = positions.at((*loc, "__key__"))
                message = f"unknown key {loc[-1]!r}; check the spelling (see {docs})"
            problems.append(Problem(path, line, col, f"{where}: {message}"))
        raise SpecError(problems) from None
