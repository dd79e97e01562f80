"""The package's floors import downward only, and no module imports itself round a cycle.

The floors are written down in DEVELOPERS.md ("Layers"); this test is their enforcement. Every
import counts, also those inside functions (a lazy import is still a dependency), except those
under ``if TYPE_CHECKING:``.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "squeezelab"

#: Floors, bottom first. A module may import its own floor or any floor below, never above.
FLOORS: list[tuple[str, ...]] = [
    ("squeezelab.fileio", "squeezelab.config", "squeezelab.cputime"),  # core utilities
    ("squeezelab.data", "squeezelab.layers", "squeezelab.models", "squeezelab"),
    ("squeezelab.metrics", "squeezelab.checkpoint"),                  # accounting, files
    ("squeezelab.hooks",),                                            # the training-hook interface
    ("squeezelab.train", "squeezelab.compress"),                      # siblings, see below
    ("squeezelab.model_meta", "squeezelab.inference", "squeezelab.export", "squeezelab.int8",
     "squeezelab.plots"),                                             # ship and show models
    ("squeezelab.workflows",),                                        # train + compress together
    ("squeezelab.cli", "squeezelab.__main__"),
]
#: Parts of one floor that must not import each other.
SIBLINGS = [("squeezelab.train", "squeezelab.compress")]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _type_checking_block(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The squeezelab modules ``name`` imports (a ``from pkg import sub`` names pkg.sub)."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if _type_checking_block(node):
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            for alias in node.names:  # from squeezelab.compress import quantization
                if f"{target}.{alias.name}" in modules:
                    found.add(f"{target}.{alias.name}")
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return {m for m in found if m == "squeezelab" or m.startswith("squeezelab.")}


def floor_of(module: str) -> int:
    best, floor = -1, None
    for i, prefixes in enumerate(FLOORS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, floor = len(prefix), i
    if floor is None:
        raise AssertionError(f"module {module} is on no floor: add it to FLOORS and DEVELOPERS.md")
    return floor


def part_of(module: str) -> str | None:
    for pair in SIBLINGS:
        for prefix in pair:
            if module == prefix or module.startswith(prefix + "."):
                return prefix
    return None


def graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {name: {m for m in imports_of(name, path, modules) if m != name}
            for name, path in modules.items()}


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
    bad = []
    for src, targets in sorted(edges.items()):
        for dst in sorted(targets):
            if floor_of(dst) > floor_of(src):
                bad.append(f"{src} (floor {floor_of(src)}) imports {dst} (floor {floor_of(dst)})")
            for pair in SIBLINGS:
                a, b = part_of(src), part_of(dst)
                if a and b and a != b and {a, b} == set(pair):
                    bad.append(f"{src} imports {dst}: {a} and {b} never import each other")
    return bad


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in edges:
                continue
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            connect(v)
    return out


def without_package_reexports(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    """A package's ``__init__`` that re-exports its own submodules is a facade, not a
    dependency: ``pkg.a -> pkg`` plus ``pkg -> pkg.a`` is not a cycle of design. Only the
    facade's edges into its own subtree are dropped; every other edge stays."""
    return {src: {dst for dst in targets if not dst.startswith(src + ".")}
            for src, targets in edges.items()}


def test_every_module_is_on_a_floor():
    for name in all_modules():
        floor_of(name)


def test_no_upward_import_between_floors():
    assert upward_imports(graph()) == []


def test_no_import_cycles():
    assert cycles(without_package_reexports(graph())) == []


def test_the_check_catches_an_upward_import_and_a_cycle():
    edges = {"squeezelab.compress.x": {"squeezelab.train.loop"},
             "squeezelab.train.loop": {"squeezelab.workflows.dsd"},
             "squeezelab.workflows.dsd": {"squeezelab.compress.x"}}
    bad = upward_imports(edges)
    assert any("never import each other" in b for b in bad)
    assert any("squeezelab.train.loop (floor 4) imports squeezelab.workflows.dsd" in b
               for b in bad)
    assert cycles(edges) == [sorted(edges)]


@pytest.mark.parametrize("module", ["squeezelab.train.loop", "squeezelab.compress"])
def test_a_real_module_is_parsed(module):
    edges = graph()
    assert edges[module], f"{module} should import something of squeezelab"
