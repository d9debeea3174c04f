"""Config YAML: a SafeLoader that refuses what YAML allows but a config never means.

A repeated key would silently lose its first value, and a few lines of nested aliases (the
"billion laughs") expand to gigabytes once the config is copied and validated; both are checked on
the composed node graph, before any Python object is built.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from lmtool.config.errors import ConfigError, LmtoolError

# A real config has a few hundred values; aliases may share sections, not multiply them past this.
MAX_EXPANDED_NODES = 100_000


class YamlLoader(yaml.SafeLoader):
    """SafeLoader that also reads `3e-4` as a float (YAML 1.1 needs a dot: `3.0e-4`)."""


YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d[\d_]*)?(?:\.\d*)?[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def yaml_load(text: str, origin: str = "--set") -> Any:
    """Parse one YAML document; `origin` names it in errors."""
    return compose_and_load(text, origin)[1]


def compose_and_load(text: str, origin: str) -> tuple[yaml.Node | None, Any]:
    """The checked node graph (for line numbers) and the data built from it."""
    loader = YamlLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        _check_duplicates(node, (), origin, set())
        _expanded_size(node, {}, set(), origin)
        return node, loader.construct_document(node)
    finally:
        loader.dispose()


def _check_duplicates(node: yaml.Node, prefix: tuple, origin: str, seen: set[int]) -> None:
    if id(node) in seen:  # an alias: its node was checked where it was anchored
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if isinstance(key_node, yaml.ScalarNode) and key != "<<":
                if key in first_line:
                    raise ConfigError(
                        ".".join(map(str, (*prefix, key))),
                        f"duplicate key (lines {first_line[key]} and {line}; YAML would keep only the last)",
                        has_value=False,
                        location=f"{origin}:{line}",
                    )
                first_line[key] = line
            _check_duplicates(value_node, (*prefix, key), origin, seen)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _check_duplicates(item, (*prefix, index), origin, seen)


def _expanded_size(node: yaml.Node, sizes: dict[int, int], open_: set[int], origin: str) -> int:
    """How many nodes the document has once every alias is copied out (memoised: linear time)."""
    if id(node) in sizes:
        return sizes[id(node)]
    if id(node) in open_:
        raise LmtoolError(f"{origin}:{node.start_mark.line + 1}: a YAML alias refers to itself")
    open_.add(id(node))
    children: list[yaml.Node] = []
    if isinstance(node, yaml.MappingNode):
        children = [n for pair in node.value for n in pair]
    elif isinstance(node, yaml.SequenceNode):
        children = list(node.value)
    size = 1 + sum(_expanded_size(child, sizes, open_, origin) for child in children)
    open_.discard(id(node))
    if size > MAX_EXPANDED_NODES:
        raise LmtoolError(
            f"{origin}:{node.start_mark.line + 1}: YAML aliases expand this config past "
            f"{MAX_EXPANDED_NODES} values; refusing it (an alias bomb?)"
        )
    sizes[id(node)] = size
    return size
