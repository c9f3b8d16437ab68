"""YAML loading that remembers where every value came from.

Pharmacists need "file:line: what is wrong", so we compose the YAML node tree ourselves and record
the line of each mapping key, sequence item and scalar under its path, e.g.
("recommendations", 3, "lookup") -> 57. PyYAML's own loader throws this information away and
silently keeps the last of two duplicate keys, which we report instead.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from cds.errors import Diagnostic

Path_ = tuple[Any, ...]


@dataclass
class SourceMap:
    """Line numbers (1-based) of the values in one YAML document, keyed by their path."""

    file: str
    lines: dict[Path_, int] = field(default_factory=dict)

    def line(self, path: Path_) -> int:
        """The line of `path`, or of its nearest ancestor that has one."""
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), 1)

    def diag(self, path: Path_, message: str) -> Diagnostic:
        return Diagnostic(self.file, self.line(path), message)


class YamlSourceError(Exception):
    def __init__(self, diagnostics: list[Diagnostic]):
        self.diagnostics = diagnostics
        super().__init__("; ".join(map(str, diagnostics)))


_constructor = SafeConstructor()
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: 10x faster, same marks
_STR = "tag:yaml.org,2002:str"


def _scalar(node: ScalarNode) -> Any:
    if node.tag == _STR:
        return node.value
    return _constructor.construct_object(node, deep=True)


def _build(node: Node, path: Path_, smap: SourceMap, problems: list[Diagnostic]) -> Any:
    smap.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, ScalarNode):
        return _scalar(node)
    if isinstance(node, SequenceNode):
        return [_build(item, (*path, i), smap, problems) for i, item in enumerate(node.value)]
    if isinstance(node, MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                problems.append(Diagnostic(smap.file, key_node.start_mark.line + 1,
                                           "a mapping key must be a plain value"))
                continue
            key = _scalar(key_node)
            if key in result:
                problems.append(Diagnostic(smap.file, key_node.start_mark.line + 1, f"duplicate key {key!r}"))
                continue
            smap.lines[(*path, key)] = key_node.start_mark.line + 1
            result[key] = _build(value_node, (*path, key), smap, problems)
        return result
    raise AssertionError(f"unexpected YAML node {node!r}")  # aliases are resolved by compose


def load_yaml_text(text: str, file: str) -> tuple[Any, SourceMap]:
    """Parse one YAML document; raise `YamlSourceError` with file and line on any syntax fault."""
    smap = SourceMap(file)
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as err:
        # The context mark is where the broken construct starts (an unclosed '{' or quote); the problem
        # mark is where the parser gave up, often a line later. Point at the start, mention both.
        mark = err.context_mark or err.problem_mark
        line = mark.line + 1 if mark else 1
        parts = []
        if err.context:
            parts.append(err.context + (f" (line {err.context_mark.line + 1})" if err.context_mark else ""))
        if err.problem:
            parts.append(err.problem + (f" (line {err.problem_mark.line + 1})" if err.problem_mark else ""))
        raise YamlSourceError([Diagnostic(file, line, f"YAML syntax error: {' '.join(parts)}")]) from None
    except yaml.YAMLError as err:
        raise YamlSourceError([Diagnostic(file, 1, f"YAML error: {err}")]) from None
    if node is None:
        raise YamlSourceError([Diagnostic(file, 1, "the file is empty")])
    problems: list[Diagnostic] = []
    try:
        data = _build(node, (), smap, problems)
    except yaml.constructor.ConstructorError as err:
        mark = err.problem_mark
        line = (mark.line + 1) if mark else 1
        raise YamlSourceError([Diagnostic(file, line, f"YAML value error: {err.problem}")]) from None
    if problems:
        raise YamlSourceError(problems)
    return data, smap


def load_yaml_file(path: Path, display_name: str | None = None) -> tuple[Any, SourceMap]:
    name = display_name or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise YamlSourceError([Diagnostic(name, 1, f"not UTF-8 text ({err.reason})")]) from None
    return load_yaml_text(text, name)
