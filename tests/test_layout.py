"""The package layout: every module imports only from its own floor or the floors below, and
the module-level imports have no cycle."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "tfn"

#: floor of each top-level part of the package (README: "Layout")
FLOORS = {
    "_extension": 0,
    "so3": 1,
    "data": 1,
    "ops": 2,
    "testing": 2,
    "nn": 3,
    "models": 4,
    "datasets": 4,
    "tasks": 5,
    "interop": 5,
    "ase": 5,
    "train": 6,
    "cli": 7,
}

#: Imports inside functions allowed to reach up: a run folder is opened through the public
#: tfn.load, whose trainer lives on a higher floor than the calculator that accepts one.
LAZY_UPWARD = {
    ("tfn.interop.ase", "tfn"),
    # the deprecated alias tfn.nn.TensorFieldNetwork (the network moved up to tfn.models)
    ("tfn.nn", "tfn.models.network"),
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _part(module: str) -> str | None:
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 and pieces[0] == "tfn" else None


def _imports(path: Path) -> list[tuple[str, bool]]:
    """``(imported module, at module level)`` for every ``tfn`` import of a file."""
    tree = ast.parse(path.read_text())
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    top_level = {id(node) for node in tree.body}
    # imports under `if TYPE_CHECKING:` are for annotations only
    type_checking = {
        id(n)
        for node in tree.body
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for n in ast.walk(node)
    }
    out = []
    for node in ast.walk(tree):
        if id(node) in type_checking:
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [base]
        for name in names:
            if name == "tfn" or name.startswith("tfn."):
                out.append((name, id(node) in top_level))
    return out


def _files():
    return sorted(p for p in SRC.rglob("*.py"))


def test_every_part_has_a_floor():
    parts = {_part(_module_name(p)) for p in _files()} - {None}
    assert parts <= set(FLOORS), parts - set(FLOORS)


def test_imports_never_reach_a_higher_floor():
    bad = []
    for path in _files():
        module = _module_name(path)
        own = _part(module)
        if own is None:  # tfn/__init__.py: the public facade
            continue
        for name, top in _imports(path):
            target = _part(name)
            if target is None:
                if not top and (module, name) in LAZY_UPWARD:
                    continue
                bad.append(f"{module} imports the tfn facade")
                continue
            if FLOORS[target] > FLOORS[own]:
                if not top and (module, name) in LAZY_UPWARD:
                    continue
                bad.append(
                    f"{module} (floor {FLOORS[own]}) imports {name} (floor {FLOORS[target]})"
                )
    assert not bad, "\n".join(bad)


def test_no_import_cycles_at_module_level():
    graph: dict[str, set[str]] = {}
    modules = {_module_name(p) for p in _files()}
    for path in _files():
        deps = set()
        for name, top in _imports(path):
            if not top:
                continue
            # `from tfn.a import b` may name a module tfn.a.b or an attribute of tfn.a
            deps.add(name if name in modules else name.rsplit(".", 1)[0])
        graph[_module_name(path)] = {d for d in deps if d in modules and d != _module_name(path)}

    def parents(m: str) -> set[str]:  # importing tfn.a.b runs tfn/a/__init__.py first
        pieces = m.split(".")
        return {".".join(pieces[:i]) for i in range(2, len(pieces))} & modules

    # A module's own packages are already being imported when it runs: not edges.
    full = {
        m: (graph[m] | {p for d in graph[m] for p in parents(d)}) - parents(m) - {m} for m in graph
    }
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(m: str, stack: list[str]) -> bool:
        state[m] = 1
        for d in sorted(full.get(m, ())):
            if state.get(d) == 1:
                cycle.extend(stack[stack.index(d) :] + [d] if d in stack else [m, d])
                return True
            if state.get(d) is None and visit(d, stack + [d]):
                return True
        state[m] = 2
        return False

    for m in sorted(full):
        if state.get(m) is None and visit(m, [m]):
            break
    assert not cycle, " -> ".join(cycle)
