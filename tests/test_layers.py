"""The layers import downward only, function-level imports included.

From the bottom: the top-level helpers (errors, atomic, config, signals, provenance) ->
data -> models, synthetic, evaluation, plotting -> inference, explain -> training ->
experiments -> cli. A module may import its own layer and the ones below; the library
never imports the command line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import icecontext

ROOT = Path(icecontext.__file__).parent
RANK = {
    "data": 1,
    "models": 2,
    "synthetic": 2,
    "evaluation": 2,
    "plotting": 2,
    "inference": 3,
    "explain": 3,
    "training": 4,
    "experiments": 5,
    "cli": 6,
}
# Known debt (issue 14): the checkpoint format lives in training but inference loads it.
KNOWN = {
    ("inference/loading.py", "icecontext.training.checkpoint"),
    ("inference/testing.py", "icecontext.training.checkpoint"),
    ("inference/testing.py", "icecontext.training.config"),
}


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: relative import; use icecontext.<...>")
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m.startswith("icecontext.")}


def upward_imports() -> set[tuple[str, str]]:
    """``(module file, imported module)`` pairs that import a higher layer."""
    found = set()
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT)
        layer = RANK.get(rel.parts[0], 0) if len(rel.parts) > 1 else 0
        if rel.parts == ("testing.py",):
            continue  # test builders: may use any layer below the command line
        for module in _imports(path):
            target = module.split(".")[1]
            if RANK.get(target, 0) > layer:
                found.add((rel.as_posix(), module))
    return found


def test_no_module_imports_a_higher_layer() -> None:
    new = upward_imports() - KNOWN
    assert not new, f"imports of a higher layer: {sorted(new)}"


def test_the_known_debt_is_still_real() -> None:
    """An entry fixed must leave the list, so the list never hides a new import."""
    assert upward_imports() >= KNOWN


def test_the_check_sees_function_level_imports(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from icecontext.cli.synth import run\n    return run\n")
    assert _imports(module) == {"icecontext.cli.synth"}
