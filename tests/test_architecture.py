"""The package's shape stays as ARCHITECTURE.md draws it: layers that import only downward, no loops.

Every import counts, module level and inside functions: a function-level import is still an arrow
a reader has to follow, and the one that hid a loop (config -> model_check -> models -> config).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "lmtool"

# Low to high. A module may import its own layer or a lower one. The first matching prefix decides.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("config", ("lmtool.config",)),
    (
        "base",
        (
            "lmtool.errors", "lmtool.console", "lmtool.compat", "lmtool.permissions", "lmtool.ownership",
            "lmtool.diskfull", "lmtool.runlock", "lmtool.text_spans", "lmtool.input_lines", "lmtool.hub",
            "lmtool.model_dir", "lmtool.positions", "lmtool",
        ),
    ),
    ("runtime", ("lmtool.runtime",)),
    ("data", ("lmtool.data",)),
    ("models", ("lmtool.models", "lmtool.lstm", "lmtool.pairing", "lmtool.finetune")),
    ("tasks", ("lmtool.tasks",)),
    ("engine", ("lmtool.train",)),
    (
        "commands",
        (
            "lmtool.recipes", "lmtool.evaluation", "lmtool.generation", "lmtool.prediction", "lmtool.planning",
            "lmtool.reporting", "lmtool.serve", "lmtool.export", "lmtool.inference", "lmtool.validate",
            "lmtool.model_check",
        ),
    ),
    ("cli", ("lmtool.cli", "lmtool.__main__")),
]  # fmt: skip

# The engine trains whatever it is handed: it builds no model, reads no data format, knows no task.
ENGINE_MUST_NOT_IMPORT = ("lmtool.data", "lmtool.models", "lmtool.finetune", "lmtool.tasks", "lmtool.lstm")


def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The lmtool modules `name` imports anywhere in its body (`from a import b` counts as a.b when
    b is a module, else as a)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "lmtool")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "lmtool":
                continue
            for alias in node.names:
                full = f"{target}.{alias.name}"
                found.add(full if full in known else target)
    found.discard(name)
    return found


def layer_of(module: str) -> int:
    best, best_length = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_length:
                best, best_length = index, len(prefix)
    assert best is not None, f"{module} is in no layer: add it to LAYERS (and ARCHITECTURE.md)"
    return best


def import_graph() -> dict[str, set[str]]:
    known = module_names()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def upward_arrows(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    return {(a, b) for a, targets in graph.items() for b in targets if layer_of(b) > layer_of(a)}


def engine_arrows(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    return {
        (a, b)
        for a, targets in graph.items()
        if a.startswith("lmtool.train")
        for b in targets
        if any(b == p or b.startswith(p + ".") for p in ENGINE_MUST_NOT_IMPORT)
    }


def loops(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_walker_sees_function_level_imports_and_loops():
    graph = {"lmtool.a": {"lmtool.b"}, "lmtool.b": {"lmtool.c"}, "lmtool.c": {"lmtool.a"}, "lmtool.d": set()}
    assert loops(graph) == [["lmtool.a", "lmtool.b", "lmtool.c"]]
    source = PACKAGE / "config" / "__init__.py"
    assert imports_of("lmtool.config", source, module_names()) >= {"lmtool.config.loader"}


def test_no_import_loops():
    assert loops(import_graph()) == []


def test_no_layer_imports_a_higher_one():
    arrows = sorted(f"{a} -> {b}" for a, b in upward_arrows(import_graph()))
    assert arrows == [], "imports that point up a layer (see ARCHITECTURE.md):\n" + "\n".join(arrows)


def test_the_engine_imports_no_task_model_or_data_format():
    arrows = sorted(f"{a} -> {b}" for a, b in engine_arrows(import_graph()))
    assert arrows == [], "\n".join(arrows)
