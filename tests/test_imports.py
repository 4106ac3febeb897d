"""The package's layering: no spar_jax module imports itself back through others.

The import graph is read from the source with `ast` (nothing is imported): module-level imports
only, since a function-level import runs late and is how a layer may call up on purpose. A parent
package is not an edge of `from spar_jax.pkg import submodule`: Python has it initialised first.
"""

from __future__ import annotations

import ast
from pathlib import Path

import spar_jax

ROOT = Path(spar_jax.__file__).parent


def module_names() -> dict[str, Path]:
    """Dotted name -> file, for every module of the package."""
    names = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def _module_level(body: list[ast.stmt]):
    """Import statements run when the module is imported (not in functions, classes or
    `if TYPE_CHECKING:` blocks)."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            test = ast.unparse(node.test)
            if test not in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
                yield from _module_level(node.body)
            yield from _module_level(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                yield from _module_level(block)
        elif isinstance(node, ast.With):
            yield from _module_level(node.body)


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The spar_jax modules `name` imports at module level."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    edges = set()
    for node in _module_level(ast.parse(path.read_text(), str(path)).body):
        if isinstance(node, ast.Import):
            edges.update(a.name for a in node.names)
            continue
        base = node.module or ""
        if node.level:
            anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            base = f"{anchor}.{base}" if base else anchor
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            edges.add(sub if sub in modules else base)
    return {e for e in edges if e in modules and e != name}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a path [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def package_graph() -> dict[str, set[str]]:
    modules = module_names()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def test_the_package_has_no_import_cycle():
    cycle = find_cycle(package_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_graph_sees_the_imports_it_must():
    graph = package_graph()
    # Checks of the reader itself, so that an empty graph cannot pass the test above.
    assert "spar_jax.models.weight_map" in graph["spar_jax.models.llama"]
    assert {"spar_jax.models.llama", "spar_jax.models.glm"} <= graph["spar_jax.models.hf"]
    assert "spar_jax.training.skips" in graph["spar_jax.training.records"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_weight_maps_import_no_family():
    graph = package_graph()
    families = {"spar_jax.models.hf", "spar_jax.models.llama", "spar_jax.models.glm"}
    assert not graph["spar_jax.models.weight_map"] & families
