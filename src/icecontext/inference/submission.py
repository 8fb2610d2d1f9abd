"""The AutoICE upload file from a model: what ``icecontext submission`` runs.

:func:`write_submission` predicts every test scene of a folder with the tiled
predictor (as ``predict`` does: the scenes are checked first, tiles are read from the
files) and appends each scene's three class maps at the full 80 m shape to
``upload_package.nc`` with :class:`~icecontext.inference.exports.UploadPackageWriter`
(format reference §4: one ``uint8`` variable ``{scene}_{chart}`` per scene and chart
with its own ``_dim0``/``_dim1``, zlib level 1; 60 variables for the 20 official test
scenes). Before the file replaces the target it must pass
:func:`~icecontext.inference.exports.check_upload_package` with the scenes and shapes
it should hold; otherwise nothing is written. Any set of scenes works; one that is not
the official test list is written with a warning.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from icecontext.data.io.format import OFFICIAL_TEST_SCENES
from icecontext.inference.exports.upload import UploadPackageWriter, check_upload_package
from icecontext.inference.loading import InferenceModel
from icecontext.inference.predictor import predict_scene
from icecontext.inference.scenes import (
    PredictSettings,
    ScenePaths,
    check_output_folder,
    open_scene_source,
    prepare_prediction,
    tile_progress,
)
from icecontext.inference.tiling import TileSettings

log = logging.getLogger(__name__)


@dataclass
class SubmissionResult:
    """What :func:`write_submission` wrote.

    Attributes:
        path: The upload file.
        scenes: Scene name -> ``(H, W)`` as written.
        official: Whether the scenes are exactly the 20 official test scenes.
        missing_official: Official scenes not in the package.
        extra: Scenes in the package that are not official test scenes.
    """

    path: Path
    scenes: dict[str, tuple[int, int]]
    official: bool
    missing_official: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)


def write_submission(
    model_path: str | os.PathLike[str],
    test_dir: ScenePaths,
    out: str | os.PathLike[str],
    settings: PredictSettings | None = None,
    *,
    model: InferenceModel | None = None,
) -> SubmissionResult:
    """Predict the test scenes and write ``upload_package.nc``.

    Args:
        model_path: ``best.ckpt`` of a run or ``model.pt`` of ``icecontext export``.
        test_dir: Folder of test ``_prep.nc`` files (or files / folders).
        out: The upload file to write.
        settings: Tiling and device options (output formats are ignored).
        model: An already loaded model.

    Returns:
        The written file and its scenes.

    Raises:
        ConfigError, SceneFormatError, DataError: Bad options or scenes (before any
            prediction).
        ExportError: The target folder is not writable.
    """
    s = settings or PredictSettings()
    loaded, tile, overlap, batch, device, precision, files = prepare_prediction(
        model_path, test_dir, s, model
    )
    out = Path(out)
    check_output_folder(out.parent)
    names = sorted(files)
    missing = sorted(set(OFFICIAL_TEST_SCENES) - set(names))
    extra = sorted(set(names) - set(OFFICIAL_TEST_SCENES))
    official = not missing and not extra
    if not official:
        log.warning(
            "the scenes are not the official AutoICE test list (%d official missing, %d not "
            "official: %s); the upload server scores only the 20 official scenes",
            len(missing),
            len(extra),
            ", ".join(extra[:5]) + (" ..." if len(extra) > 5 else ""),
        )
    shapes: dict[str, tuple[int, int]] = {}
    with UploadPackageWriter(out) as writer:
        for name in names:
            source = open_scene_source(files[name], loaded)
            try:
                with tile_progress(name, s.progress) as progress:
                    pred = predict_scene(
                        loaded.model,
                        source,
                        loaded.features,
                        tiling=TileSettings(tile=tile, overlap=overlap, batch=batch),
                        device=device,
                        precision=precision,
                        progress=progress,
                    )
            finally:
                source.close()
            writer.add(name, pred.classes)
            shapes[name] = pred.full_shape
        check_upload_package(
            writer.pending_path, expected_scenes=names, shapes=shapes, label=str(out)
        )
    return SubmissionResult(out, shapes, official, missing, extra)
