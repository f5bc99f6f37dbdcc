"""The layout README's "Layout" section promises, read from the source's own imports: no
module over 400 lines, no two modules importing each other (even inside a function), no
package importing back into one that imports it, and a core that never imports the RPG
showcase (it reaches the core only as a task plug-in)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "byllm_distill"
MODULES = {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(
    ".__init__"): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path) -> set[str]:
    """The byllm_distill modules `name` imports, anywhere in the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base
                      for a in node.names}
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _room(module: str) -> str:
    """The top-level package or module of byllm_distill a module belongs to."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_module_is_over_400_lines() -> None:
    long = {name: n for name, path in MODULES.items()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > 400}
    assert long == {}


def test_no_two_modules_import_each_other_even_inside_a_function() -> None:
    assert _cycle(GRAPH) is None


def test_no_package_imports_back_into_one_that_imports_it() -> None:
    rooms: dict[str, set[str]] = {}
    for name, targets in GRAPH.items():
        if name == "byllm_distill":
            continue  # the package's face re-exports; it is no room of its own
        rooms.setdefault(_room(name), set()).update(
            _room(t) for t in targets if t != "byllm_distill" and _room(t) != _room(name))
    assert _cycle(rooms) is None


def test_the_core_never_imports_the_rpg_showcase() -> None:
    leaks = {name: sorted(t for t in targets if _room(t) == "rpg")
             for name, targets in GRAPH.items() if _room(name) != "rpg"}
    assert {name: t for name, t in leaks.items() if t} == {}


@pytest.mark.parametrize("case", [{"a": {"b"}, "b": {"a"}}, {"a": {"b"}, "b": {"c"}, "c": {"a"}}])
def test_the_cycle_finder_finds_cycles(case: dict[str, set[str]]) -> None:
    assert _cycle(case) is not None and _cycle({"a": {"b"}, "b": set()}) is None
