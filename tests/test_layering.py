"""Layering of the package: no import cycle between its modules (imports at module level, inside functions
and for type checking alike), and the library below its views, studies and command line."""

from __future__ import annotations

import ast
from pathlib import Path

import diffcut_lab

ROOT = Path(diffcut_lab.__file__).parent
#: what the library below them never imports (views, studies, command line)
UPPER = ("diffcut_lab.viz", "diffcut_lab.ablation", "diffcut_lab.commands", "diffcut_lab.cli")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    """The modules an ``ImportFrom`` names: ``from .x import y`` is ``x.y`` when that is a module, else ``x``."""
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join([*base, node.module] if node.module else base)
    else:
        target = node.module or ""
    return [f"{target}.{a.name}" for a in node.names] + [target]


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (a package stands for its ``__init__``)."""
    files = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                candidates = _resolve(name, path.name == "__init__.py", node)
                deps |= {c for c in candidates[:-1] if c in files} or ({candidates[-1]} & files.keys())
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name in files}
        graph[name] = deps - {name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _is_package_init(name: str) -> bool:
    return (ROOT.parent / Path(*name.split(".")) / "__init__.py").exists()


def test_no_import_cycle_between_modules():
    graph = import_graph()
    assert (
        len(graph) > 60 and "diffcut_lab.ncut" in graph["diffcut_lab.segmentation"]
    )  # in-function imports seen
    # a package's __init__ re-exports its modules: edges into it are the same as edges into those modules
    plain = {
        m: {d for d in deps if not _is_package_init(d) or d == "diffcut_lab"} - {"diffcut_lab"}
        for m, deps in graph.items()
        if not _is_package_init(m)
    }
    assert not _cycles(plain), _cycles(plain)


def test_the_library_does_not_import_its_views_studies_or_command_line():
    graph = import_graph()
    lower = [
        m for m in graph if m.count(".") == 1 and not m.startswith(UPPER) and m != "diffcut_lab.__main__"
    ]
    offending = {m: sorted(d for d in graph[m] if d.startswith(UPPER)) for m in lower}
    offending = {m: d for m, d in offending.items() if d}
    assert not offending, offending


def test_the_cycle_check_sees_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
