"""The public API: the names of ``icecontext.__all__`` and the example of docs/api.md."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import icecontext

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def test_every_public_name_resolves_and_is_documented() -> None:
    text = DOC.read_text(encoding="utf-8")
    for name in icecontext.__all__[1:]:
        obj = getattr(icecontext, name)
        assert obj.__doc__, f"{name} has no docstring"
        assert f"`{name}" in text, f"{name} is missing from docs/api.md"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        icecontext.nope  # noqa: B018


def test_importing_the_package_does_not_import_torch() -> None:
    code = "import sys, icecontext; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr


def test_the_docs_example_runs(tmp_path: Path) -> None:
    """The script of docs/api.md, as written, in a fresh process."""
    text = DOC.read_text(encoding="utf-8")
    script = text.split("```python\n", 1)[1].split("```", 1)[0]
    for name in icecontext.__all__[1:]:  # every public name is used by the example
        assert f"ic.{name}" in script, f"the example does not use {name}"
    (tmp_path / "example.py").write_text(script)
    done = subprocess.run(
        [sys.executable, "example.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "trained 8 steps" in done.stdout and "receptive field" in done.stdout
    assert list((tmp_path / "api-example" / "charts").glob("*.nc"))
