"""The layers import downward only, function-level imports included, and no cycles.

From the bottom: the top-level helpers (errors, atomic, config, signals, provenance) ->
data (io -> config -> store -> loader) -> models, synthetic, evaluation, plotting -> run
(the run configuration and folder layout) -> inference, explain -> training ->
workflows, experiments -> cli. A module may import its own layer and the ones below;
the library never imports the command line (docs/architecture.md).
"""

from __future__ import annotations

import ast
from pathlib import Path

import icecontext

ROOT = Path(icecontext.__file__).parent
DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"
RANK = {
    "data.io": 1.0,
    "data.config": 1.1,
    "data.store": 1.2,
    "data.loader": 1.3,
    "testing": 2,  # icecontext.testing: scene builders for tests and benchmarks
    "models": 2,
    "synthetic": 2,
    "evaluation": 2,
    "plotting": 2,
    "run": 2.5,
    "inference": 3,
    "explain": 3,
    "training": 4,
    "workflows": 5,
    "experiments": 5,
    "cli": 6,
}
TORCH_FREE = ("data.io", "data.config", "data.store", "synthetic", "evaluation", "run", "testing")
"""Units whose modules do not import torch when loaded, so reading, preparing and scoring
stay light (a function handed a tensor may import it: torch is then loaded already)."""


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: relative import; use icecontext.<...>")
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def unit_of(module: str) -> str:
    """The layer unit of a dotted module name below ``icecontext.`` ("" = top-level)."""
    parts = module.split(".")[1:]
    if parts == ["testing"]:
        return "testing"
    if not parts or (len(parts) == 1 and parts[0] not in RANK):
        return ""  # a top-level helper module, or the package itself
    if parts[0] == "data" and len(parts) > 1:
        return f"data.{parts[1]}"
    return parts[0]


def _modules() -> dict[str, set[str]]:
    """Dotted module name -> every module it imports."""
    out = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        out[".".join(["icecontext", *parts])] = _imports(path)
    return out


def upward_imports() -> set[tuple[str, str]]:
    """``(module, imported module)`` pairs that import a higher layer."""
    found = set()
    for module, imports in _modules().items():
        rank = RANK.get(unit_of(module), 0)
        for imported in imports:
            if imported.startswith("icecontext.") and RANK.get(unit_of(imported), 0) > rank:
                found.add((module, imported))
    return found


def unit_graph() -> dict[str, set[str]]:
    """Layer unit -> the other units it imports."""
    graph: dict[str, set[str]] = {}
    for module, imports in _modules().items():
        unit = unit_of(module)
        for imported in imports:
            if imported.startswith("icecontext.") and unit_of(imported) != unit:
                graph.setdefault(unit, set()).add(unit_of(imported))
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path ``[a, b, ..., a]``, or ``None``."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_module_imports_a_higher_layer() -> None:
    assert not upward_imports(), f"imports of a higher layer: {sorted(upward_imports())}"


def test_no_cycles_between_units() -> None:
    assert find_cycle(unit_graph()) is None, f"import cycle: {find_cycle(unit_graph())}"


def _module_level_imports(path: Path) -> set[str]:
    out = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_torch_free_units_do_not_import_torch() -> None:
    found = set()
    for path in ROOT.rglob("*.py"):
        parts = [p for p in path.relative_to(ROOT).with_suffix("").parts if p != "__init__"]
        heavy = {m.split(".")[0] for m in _module_level_imports(path)} & {"torch", "lightning"}
        if heavy and unit_of(".".join(["icecontext", *parts])) in TORCH_FREE:
            found.add(path.relative_to(ROOT).as_posix())
    assert not found, f"torch imported by {sorted(found)}"


def test_every_subpackage_has_a_rank() -> None:
    units = {unit_of(m) for m in _modules()} - {""}
    assert units <= set(RANK), units - set(RANK)


def test_the_checks_see_function_level_imports_and_cycles(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from icecontext.cli.synth import run\n    return run\n")
    assert "icecontext.cli.synth" in _imports(module)
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}}) is None
    assert unit_of("icecontext.data.store.prepare") == "data.store"
    assert unit_of("icecontext.errors") == ""


def transitive_reduction(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """``graph`` without the edges implied by longer paths (the picture's edges)."""

    def reachable(start: str) -> set[str]:
        seen: set[str] = set()
        stack = [start]
        while stack:
            for nxt in graph.get(stack.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return seen

    return {
        node: {t for t in targets if not any(t in reachable(o) for o in targets - {t})}
        for node, targets in graph.items()
    }


def mermaid() -> str:
    """The layer picture of docs/architecture.md, generated from the import graph."""
    graph = transitive_reduction(unit_graph())
    label = {"": "errors, atomic, config, signals, provenance", "testing": "testing (builders)"}
    lines = ["flowchart BT"]
    for unit in sorted({*graph, *(t for ts in graph.values() for t in ts)}, key=_order):
        name = unit.replace(".", "_") or "base"
        lines.append(f'    {name}["{label.get(unit, unit)}"]')
    for unit in sorted(graph, key=_order):
        for target in sorted(graph[unit], key=_order):
            lines.append(
                f"    {unit.replace('.', '_') or 'base'} --> {target.replace('.', '_') or 'base'}"
            )
    return "\n".join(lines)


def _order(unit: str) -> tuple[float, str]:
    return (RANK.get(unit, 0), unit)


PICTURE_START = "```mermaid\n"


def test_the_architecture_picture_is_current() -> None:
    """docs/architecture.md draws the import graph as it is (regenerate: see below)."""
    text = DOC.read_text(encoding="utf-8")
    drawn = text.split(PICTURE_START, 1)[1].split("```", 1)[0].strip()
    assert drawn == mermaid(), "run: python tests/test_layers.py (rewrites the picture)"


if __name__ == "__main__":  # rewrite the picture in docs/architecture.md
    text = DOC.read_text(encoding="utf-8")
    head, rest = text.split(PICTURE_START, 1)
    DOC.write_text(head + PICTURE_START + mermaid() + "\n```" + rest.split("```", 1)[1], "utf-8")
