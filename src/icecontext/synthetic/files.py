"""Write a generated scene as the files a user holds: the scene, its labels, its truth.

``write_synthetic_scene`` puts one :class:`~icecontext.synthetic.physical.PhysicalScene`
on disk in the ready-to-train or raw layout, as a training or a test scene, with the
``<name>_synth.json`` truth summary beside it. ``icecontext synth``, the quickstart and
the study sweep all write their scenes through it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from icecontext.atomic import write_text_atomic
from icecontext.data.io.format import (
    CHART_FILL,
    CHARTS,
    prep_file_name,
    reference_file_name,
)
from icecontext.data.io.scene import write_scene
from icecontext.synthetic.generator import truth_summary
from icecontext.synthetic.physical import PhysicalScene
from icecontext.synthetic.writers import (
    physical_to_r2t,
    physical_to_raw,
    raw_file_name,
    write_raw,
)

TRUTH_SUFFIX = "_synth.json"
"""Suffix of the truth summary written beside each synthetic scene."""


def write_synthetic_scene(
    scene: PhysicalScene,
    out: Path,
    *,
    seed: int,
    raw: bool = False,
    test_set: bool = False,
    complevel: int = 1,
) -> list[Path]:
    """Write one generated scene in the requested layout.

    Args:
        scene: The generated scene.
        out: Output folder.
        seed: The scene's seed (also seeds the raw files' 40 m texture).
        raw: Write the raw 40 m file instead of the ready-to-train one.
        test_set: Keep the labels out of the scene file: ready-to-train charts all
            255 (or a raw file without chart) plus ``_prep_reference.nc``.
        complevel: zlib level of the NetCDF variables.

    Returns:
        The files written: scene file, labels file (test set), truth JSON.
    """
    name = scene.scene_name
    truth = truth_summary(scene)
    written: list[Path] = []
    if raw:
        if test_set:
            labels = physical_to_r2t(scene)[list(CHARTS)]
            written.append(
                write_scene(labels, out / reference_file_name(name), complevel=complevel)
            )
            del labels
        raw_ds = physical_to_raw(scene, seed, with_chart=not test_set)
        written.insert(0, write_raw(raw_ds, out / raw_file_name(scene), complevel=complevel))
    else:
        ds = physical_to_r2t(scene)
        if test_set:
            written.append(
                write_scene(
                    ds, out / reference_file_name(name), variables=CHARTS, complevel=complevel
                )
            )
            for chart in CHARTS:
                ds[chart] = ds[chart].copy(data=np.full_like(ds[chart].values, CHART_FILL))
        written.insert(0, write_scene(ds, out / prep_file_name(name), complevel=complevel))
    written.append(
        write_text_atomic(out / f"{name}{TRUTH_SUFFIX}", json.dumps(truth, indent=1) + "\n")
    )
    return written
