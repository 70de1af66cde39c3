"""The import graph of kernelfield: dependencies point one way (no cycle through module-level or
function-level ``from .x import`` statements) and the modules listed below hold no
function-local imports other than optional heavy dependencies."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "kernelfield"

def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in SRC.rglob("*.py")}


def _resolve(module: str, node: ast.ImportFrom) -> list[str]:
    """The kernelfield modules an import statement in ``module`` loads."""
    is_package = MODULES[module].name == "__init__.py"
    if node.level:
        base = module.split(".")
        base = base[: len(base) - node.level + (1 if is_package else 0)]
        target = ".".join(base + ([node.module] if node.module else []))
    elif node.module and node.module.split(".")[0] == "kernelfield":
        target = node.module
    else:
        return []
    out = []
    for alias in node.names:
        sub = f"{target}.{alias.name}"
        out.append(sub if sub in MODULES else target)
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the kernelfield modules it imports (anywhere in the file)."""
    graph = {}
    for module, path in MODULES.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                edges.update(_resolve(module, node))
            elif isinstance(node, ast.Import):
                edges.update(a.name for a in node.names if a.name in MODULES and a.name != "kernelfield")
        graph[module] = {e for e in edges if e != module}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of nodes, or ``None``."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_cycle_finder_finds_a_cycle_and_accepts_a_chain():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_resolve_names_submodules_and_the_package():
    graph = import_graph()
    assert "kernelfield.theory.solver" in graph["kernelfield.theory.stability"]
    assert "kernelfield.symmetry" in graph["kernelfield.finite.sampling"]
    assert "kernelfield.theory.lazy" in graph["kernelfield"]


def test_no_import_cycle():
    graph = import_graph()
    # the package __init__ imports everything; an edge back to it from a module is a cycle
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


def test_theory_does_not_import_the_comparison_or_storage():
    graph = import_graph()
    for module in [m for m in graph if m.startswith("kernelfield.theory")]:
        assert not graph[module] & {"kernelfield.compare", "kernelfield.storage", "kernelfield"}, module


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_function_local_imports(module):
    """Inside functions: no kernelfield import at all, and a third-party one only with a comment
    on its line saying why (an optional heavy dependency)."""
    source = MODULES[module].read_text(encoding="utf-8")
    lines = source.splitlines()
    local = []
    for fn in ast.walk(ast.parse(source)):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(fn):
            internal = (isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("kernelfield"))
                        or isinstance(node, ast.Import) and any(a.name.startswith("kernelfield") for a in node.names))
            external = isinstance(node, (ast.Import, ast.ImportFrom)) and not internal
            if internal or (external and "#" not in lines[node.lineno - 1]):
                local.append(f"{fn.name}: line {node.lineno}")
    assert not local, f"{module}: function-local imports in {local}"
