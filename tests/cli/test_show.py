"""``icecontext show``: PNG of synthetic, test-set and raw scenes; errors name the option."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest

from icecontext.cli.main import main
from icecontext.data.io.scene import find_scenes


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("show")
    out = {}
    for kind, extra in (("r2t", []), ("test", ["--test-set"]), ("raw", ["--raw"])):
        folder = base / kind
        args = ["synth", "--out", str(folder), "--height", "260", "--width", "270"]
        assert main([*args, "--seed", "3", "--no-progress", *extra]) == 0
        if kind == "raw":
            out[kind] = next(folder.glob("S1*.nc"))
        else:
            out[kind] = find_scenes(folder)[0]
    return out


def _png(path: Path) -> np.ndarray:
    return mpimg.imread(path)


@pytest.mark.parametrize("kind", ["r2t", "test", "raw"])
def test_show_writes_a_png_for_every_file_kind(
    scenes: dict[str, Path], tmp_path: Path, kind: str, capsys
) -> None:
    out = tmp_path / f"{kind}.png"
    # the scene positional or as --scenes (the other commands' spelling); -o for --out
    scene = [str(scenes[kind])] if kind != "raw" else ["--scenes", str(scenes[kind])]
    assert main(["show", *scene, "-o", str(out), "--dpi", "40"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    img = _png(out)
    assert img.shape[0] > 200 and img.shape[1] > 400
    assert img[..., :3].std() > 0.05  # not a blank canvas


def test_show_of_a_test_scene_without_its_labels_says_so(
    scenes: dict[str, Path], tmp_path: Path
) -> None:
    from icecontext.data.io.scene import open_scene
    from icecontext.plotting.scene import render_scene

    bare = render_scene(open_scene(scenes["test"], reference=None))
    paired = render_scene(open_scene(scenes["test"]))
    note = [t.get_text() for t in bare.texts]
    assert any("no labels" in t for t in note)
    assert not any("no labels" in t.get_text() for t in paired.texts)
    assert (
        main(
            [
                "show",
                str(scenes["test"]),
                "--out",
                str(tmp_path / "a.png"),
                "--no-reference",
                "--dpi",
                "30",
            ]
        )
        == 0
    )


@pytest.mark.parametrize(
    ("extra", "option"),
    [(["--max-size", "10"], "--max-size"), (["--dpi", "5"], "--dpi"), ([], "--out")],
)
def test_bad_options_name_the_option(
    scenes: dict[str, Path], tmp_path: Path, capsys, extra: list[str], option: str
) -> None:
    target = tmp_path / ("x.jpg" if option == "--out" else "x.png")
    assert main(["show", str(scenes["r2t"]), "--out", str(target), *extra]) == 2
    assert f"option '{option}'" in capsys.readouterr().err
    assert not target.exists()


def test_missing_scene_file_is_reported_with_its_path(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "20200101T000000_dmi_prep.nc"
    assert main(["show", str(missing), "--out", str(tmp_path / "x.png")]) == 2
    assert str(missing) in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "one of the arguments SCENE --scenes/-s is required"),
        (["a.nc", "--scenes", "b.nc"], "argument --scenes/-s: not allowed with argument SCENE"),
    ],
)
def test_the_scene_is_given_once(tmp_path: Path, capsys, argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["show", *argv, "-o", str(tmp_path / "x.png")])
    assert exit_.value.code == 2 and message in capsys.readouterr().err
