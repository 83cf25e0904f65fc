"""Strict YAML loading for site configs.

Differences from ``yaml.safe_load`` that matter to admins:
- a duplicated key is an error (a silent override hides typos);
- ``48:00:00`` stays the string it looks like (YAML 1.1 would make it the integer 172800);
- every mapping key and list item remembers its line, so later errors can point at it.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

Path = tuple[str | int, ...]


class YAMLFileError(ValueError):
    def __init__(self, message: str, line: int | None = None):
        super().__init__(message)
        self.line = line


class _StrictLoader(yaml.SafeLoader):
    pass


# Same as PyYAML's int resolver minus the base-60 form.
_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:int"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(
        r"""^(?:[-+]?0b[0-1_]+
        |[-+]?0[0-7_]+
        |[-+]?(?:0|[1-9][0-9_]*)
        |[-+]?0x[0-9a-fA-F_]+)$""",
        re.X,
    ),
    list("-+0123456789"),
)
# Floats: drop the base-60 form too.
_StrictLoader.yaml_implicit_resolvers = {
    first: [
        (tag, regexp)
        for tag, regexp in resolvers
        if not (tag == "tag:yaml.org,2002:float" and ":" in regexp.pattern)
    ]
    for first, resolvers in _StrictLoader.yaml_implicit_resolvers.items()
}
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?
        |\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _dotted(path: Path) -> str:
    text = ""
    for key in path:
        text += f"[{key}]" if isinstance(key, int) else (f".{key}" if text else str(key))
    return text


def _line_map(node: yaml.Node, path: Path, lines: dict[Path, int]) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            if key in seen:
                raise YAMLFileError(
                    f"{_dotted(path) or 'top level'}: key {key!r} appears twice "
                    f"(first on line {seen[key]})",
                    key_node.start_mark.line + 1,
                )
            seen[key] = key_node.start_mark.line + 1
            _line_map(value_node, path + (key,), lines)
            lines[path + (key,)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _line_map(item, path + (index,), lines)


def load_yaml(text: str) -> tuple[Any, dict[Path, int]]:
    """Parse ``text``; return the data and a map from key path to line number."""
    try:
        node = yaml.compose(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark else None
        problem = " ".join(part for part in (error.context, error.problem) if part)
        if error.context_mark and error.problem_mark and error.context_mark.line != error.problem_mark.line:
            problem += f" (the construct began on line {error.context_mark.line + 1})"
        raise YAMLFileError(f"YAML syntax error: {problem}", line) from None
    lines: dict[Path, int] = {}
    if node is None:
        return None, lines
    _line_map(node, (), lines)
    loader = _StrictLoader(text)
    try:
        data = loader.construct_document(node)
    except yaml.YAMLError as error:
        raise YAMLFileError(f"YAML error: {error}") from None
    finally:
        loader.dispose()
    return data, lines
