"""Parameters of the synthetic scene generator, including its spatial-context scales.

The generator is meant to *validate* the spatial-context study: every chart property
is written into the SAR so that a single pixel is ambiguous and the property becomes
resolvable only from a neighbourhood of a known size. Those sizes are the
:class:`SynthScales`; they are recorded in ``PhysicalScene.truth["scales"]`` and in
the files written by ``icecontext synth`` (``*_synth.json``).

* **SIC** - ``sic_cluster_px``: the ice inside a chart polygon is clustered by a
  Gaussian random field with this correlation length (bands of floes, leads,
  polynyas). Single pixels are mostly all-ice or all-water; the polygon's
  concentration is the ice fraction of a neighbourhood several times this size.
* **SOD** - ``sod_texture_px``: stages of development differ by their *texture*
  (ridge networks of first-year ice, hummocks of old ice, uniform young ice, frost
  flowers on new ice) whose correlation length is this, while their single-pixel
  backscatter distributions overlap (e.g. a first-year ridge looks like old ice, a
  level first-year pixel like thin first-year ice).
* **FLOE** - ``floe_size_factor``: floes are drawn from the physical size range of
  their SIGRID-3 form (cake 2-20 m ... giant > 10 km) and rendered at
  ``size * floe_size_factor / 80 m`` pixels. 1 is physical; other values stretch
  the floes as if the pixel spacing were ``80 m / floe_size_factor``.

Three presets (``fine``, ``medium``, ``coarse``) and a numeric multiplier of the
medium preset are offered through :func:`resolve_scales`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final, Literal

from pydantic import Field

from icecontext.config import Section
from icecontext.errors import ConfigError

ScalePreset = Literal["fine", "medium", "coarse"]
Service = Literal["dmi", "cis"]


class SynthScales(Section):
    """Spatial scales (in 80 m pixels) at which chart properties become visible.

    Attributes:
        sic_cluster_px: Correlation length of the ice-cover clustering field. The
            field is white noise smoothed by a Gaussian of standard deviation
            ``sic_cluster_px / 2``, so its autocorrelation falls to 1/e at this lag.
        sod_texture_px: Correlation length (same definition) of the deformation
            texture that tells the stages of development apart.
        floe_size_factor: Multiplier of physical floe diameters when they are drawn
            in pixels (1 = physical at 80 m).
    """

    sic_cluster_px: float = Field(default=16.0, gt=0.0, le=2000.0)
    sod_texture_px: float = Field(default=10.0, gt=0.0, le=2000.0)
    floe_size_factor: float = Field(default=1.0, gt=0.0, le=100.0)

    def scaled(self, factor: float) -> SynthScales:
        """Return these scales with every length multiplied by ``factor``."""
        return SynthScales(
            sic_cluster_px=self.sic_cluster_px * factor,
            sod_texture_px=self.sod_texture_px * factor,
            floe_size_factor=self.floe_size_factor * factor,
        )


SCALE_PRESETS: Final[dict[str, SynthScales]] = {
    "fine": SynthScales(sic_cluster_px=4.0, sod_texture_px=3.0, floe_size_factor=0.5),
    "medium": SynthScales(sic_cluster_px=16.0, sod_texture_px=10.0, floe_size_factor=1.0),
    "coarse": SynthScales(sic_cluster_px=64.0, sod_texture_px=40.0, floe_size_factor=4.0),
}
"""Named settings. ``medium`` keeps floes at their physical size; ``fine`` and ``coarse``
move every scale by the same factor (1/4 and 4 of the medium lengths; floes 1/2 and 4)."""


def resolve_scales(value: str | float | SynthScales, option: str = "--scale") -> SynthScales:
    """Turn a preset name, a multiplier of the medium preset, or scales into scales.

    Args:
        value: ``"fine"``, ``"medium"``, ``"coarse"``, a positive number (``"2"``
            means twice every medium length), or a :class:`SynthScales`.
        option: Option named in error messages.

    Raises:
        ConfigError: For an unknown name or a non-positive multiplier.
    """
    if isinstance(value, SynthScales):
        return value
    if isinstance(value, str) and value in SCALE_PRESETS:
        return SCALE_PRESETS[value]
    try:
        factor = float(value)
    except (TypeError, ValueError):
        raise ConfigError(
            option,
            f"unknown scale '{value}'; use one of {', '.join(SCALE_PRESETS)} "
            "or a positive multiplier of the medium preset (e.g. 2.5)",
        ) from None
    if not factor > 0 or factor > 50:
        raise ConfigError(option, f"scale multiplier must be in (0, 50], got {value}")
    return SCALE_PRESETS["medium"].scaled(factor)


class SynthParams(Section):
    """Everything that shapes one synthetic scene, apart from the random seed.

    Attributes:
        height: SAR lines at 80 m (a real scene is about 5000).
        width: SAR samples at 80 m (a real scene is about 5200).
        service: Ice service (``dmi`` Greenland, ``cis`` Canada); ``None`` draws one.
        scene_time: Acquisition start; ``None`` draws a date with the dataset's
            month distribution (2018-2021).
        scales: Spatial-context scales (see :class:`SynthScales`).
        polygon_size_km: Typical ice-chart polygon size; a real chart of a 400 km
            scene has about 40 polygons (format reference §2.2), i.e. about 60 km.
        min_polygons: Lower bound on the number of polygons (keeps small scenes varied).
        water_fraction: Share of the sea area charted as open water; ``None`` draws it
            like the dataset (some scenes water-only, some without water).
        land_fraction: Share of the scene that is land; ``None`` draws it.
        enl: Equivalent number of looks of the 80 m SAR speckle.
        keep_truth_arrays: Store per-pixel truth arrays (ice fraction, stage, ...) in
            ``PhysicalScene.truth``; turn off to save memory on large scenes.
    """

    height: int = Field(default=5000, ge=26, le=20000)
    width: int = Field(default=5200, ge=26, le=20000)
    service: Service | None = None
    scene_time: datetime | None = None
    scales: SynthScales = Field(default_factory=lambda: SCALE_PRESETS["medium"])
    polygon_size_km: float = Field(default=60.0, gt=1.0, le=1000.0)
    min_polygons: int = Field(default=6, ge=1, le=500)
    water_fraction: float | None = Field(default=None, ge=0.0, le=1.0)
    land_fraction: float | None = Field(default=None, ge=0.0, le=0.9)
    enl: float = Field(default=20.0, gt=0.5, le=1000.0)
    keep_truth_arrays: bool = True


def set_scene_params(
    index: int, height: int, width: int, scales: SynthScales, polygon_size_km: float
) -> SynthParams:
    """Parameters of scene ``index`` of a synthetic training set (quickstart, study).

    Services alternate (DMI for even indices, CIS for odd) so both chart styles are in
    every set; truth arrays are not kept (the sidecar holds what the sets need).
    """
    return SynthParams(
        height=height,
        width=width,
        service="dmi" if index % 2 == 0 else "cis",
        scales=scales,
        polygon_size_km=polygon_size_km,
        keep_truth_arrays=False,
    )
