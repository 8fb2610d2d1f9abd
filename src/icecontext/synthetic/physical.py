"""The hand-over between the synthetic generator and the file writers.

The generator (:mod:`icecontext.synthetic.generator`) produces a :class:`PhysicalScene`:
everything a raw AI4Arctic file holds, in physical units, on the 80 m grid. The
writers (:mod:`icecontext.synthetic.writers`) turn it into a ready-to-train dataset
(through the same chart conversion and assembly code that converts real raw files)
or into a raw 40 m file. Keeping this boundary explicit is what makes
``convert-raw(raw synthetic) == ready-to-train synthetic`` testable.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class TiePoints:
    """The 21 x 21 geolocation tie points of a scene, as raw files store them.

    All arrays are 1-D with 441 elements in line-major order (the points with
    ``line == 0`` first). ``line`` and ``sample`` are in **raw 40 m pixel index units**,
    exactly as the raw files' ``sar_grid_line``/``sar_grid_sample``.

    Attributes:
        line: Row coordinate of each point (40 m pixels).
        sample: Column coordinate of each point (40 m pixels).
        latitude: Degrees north.
        longitude: Degrees east.
        incidence_angle: Degrees.
        height: Metres above the ellipsoid.
    """

    line: np.ndarray
    sample: np.ndarray
    latitude: np.ndarray
    longitude: np.ndarray
    incidence_angle: np.ndarray
    height: np.ndarray


@dataclass
class PhysicalScene:
    """One synthetic scene in physical units on the 80 m grid.

    Attributes:
        scene_name: ``{YYYYMMDDThhmmss}_{dmi|cis}``.
        original_id: The raw file name this scene pretends to come from.
        icechart_id: The ice chart's id (``dmi_..._RIC`` / ``cis_SGRDI..._pl_a``).
        polygon_ids: float32 (H, W) polygon id per pixel, NaN where no chart polygon
            (land and outside the chart region).
        polygon_codes: The raw ``polygon_codes`` table: element 0 is the header
            ``poly_id;CT;CA;SA;FA;CB;SB;FB;CC;SC;FC;CN;CD;CF;POLY_TYPE``, then one
            ``;``-separated row of two-digit codes per polygon (``-9`` = not filled).
        sar_valid: bool (H, W), True where the SAR swath has data.
        hh_db: float32 (H, W) HH sigma0 in dB (NaN where ``~sar_valid``).
        hv_db: float32 (H, W) HV sigma0 in dB (NaN where ``~sar_valid``).
        distance_zones: float32 (H, W) distance-to-land zone id 0..41 (0 = land).
        tiepoints: Geolocation and incidence-angle tie points.
        amsr2: Brightness temperatures in K on the 2 km grid, by variable name
            (``btemp_6_9h`` ...), float64 (floor(H/25), floor(W/25)).
        era5: ERA5 fields on the 2 km grid, by variable name, float64.
        amsr2_attrs: Extra attributes per AMSR2 variable (``AMSR2_swaths``,
            ``AMSR2_S1_delays``).
        truth: Generator-side ground truth not stored in files (e.g. the scale
            parameters, sub-pixel concentration), for validation and docs.
        charts: Per-pixel ``SIC``/``SOD``/``FLOE`` classes (uint8, 255 = masked) when the
            labels are not polygons (known-truth scenes); ``None``: the writers convert
            ``polygon_codes``.
    """

    scene_name: str
    original_id: str
    icechart_id: str
    polygon_ids: np.ndarray
    polygon_codes: list[str]
    sar_valid: np.ndarray
    hh_db: np.ndarray
    hv_db: np.ndarray
    distance_zones: np.ndarray
    tiepoints: TiePoints
    amsr2: dict[str, np.ndarray]
    era5: dict[str, np.ndarray]
    amsr2_attrs: dict[str, dict[str, object]] = field(default_factory=dict)
    truth: dict[str, object] = field(default_factory=dict)
    charts: dict[str, np.ndarray] | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """``(sar_lines, sar_samples)`` at 80 m."""
        return self.hh_db.shape

    @property
    def service(self) -> str:
        """Ice service, ``"dmi"`` or ``"cis"``."""
        return self.scene_name[16:19]
