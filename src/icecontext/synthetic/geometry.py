"""Scene identity and acquisition geometry: names, footprint, incidence angle, tie points.

Numbers and rules (format reference §0, §1.1, §2.1, §6.1):

* Acquisition dates follow the training list: years 2018-2021 weighted 88/128/117/179
  scenes, months weighted with August/September the most and February/March the
  least (the monthly weights between those anchors are approximate).
* Raw names: ``S1{A|B}_EW_GRDM_1SDH_{start}_{stop}_{orbit:6}_{datatake:6 hex}_{uid:4 hex}
  _icechart_{chart}.nc`` with the DMI / CIS chart-id patterns and region names of the
  training list; the scene name is characters 17..32 and 77..80 of that name.
* Incidence angle rises with the sample index from about 20 deg (near range) to
  about 46 deg (far range) like the EW swath (18.9-47.0 deg), through the tie points
  only (raw files hold no full-resolution incidence angle): the 80 m value is the
  bilinear interpolation of the 21 x 21 tie points at 40 m coordinates
  ``(2 i + 0.5, 2 j + 0.5)``, the rule the raw converter applies.
  A synthetic scene narrower than a real swath is a miniature of the whole swath:
  it still spans the full incidence-angle range.
* Tie points: 21 x 21, line-major, in raw 40 m pixel units, spanning the image;
  latitude/longitude from geodesics (``pyproj.Geod``) around a region centre with a
  near-polar track heading and right-looking range direction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

import numpy as np
from pyproj import Geod

from icecontext.data.io.format import TIEPOINT_SHAPE
from icecontext.synthetic.physical import TiePoints

YEAR_WEIGHTS: Final = {2018: 88, 2019: 128, 2020: 117, 2021: 179}
# Training scenes per month (Aug 65, Sep 71, Feb/Mar 31 are from the format reference;
# the others are interpolated so the total is 512).
MONTH_WEIGHTS: Final = (40, 31, 31, 36, 38, 41, 50, 65, 71, 40, 34, 35)

# Region -> (count in the training list, approximate centre latitude, longitude).
DMI_REGIONS: Final = {
    "CapeFarewell": (39, 60.0, -44.0),
    "CentralEast": (39, 69.0, -23.0),
    "Qaanaaq": (39, 77.0, -71.0),
    "NorthEast": (38, 78.5, -14.0),
    "NorthWest": (37, 75.0, -62.0),
    "CentralWest": (36, 69.0, -55.0),
    "North": (31, 82.0, -35.0),
    "SouthWest": (27, 63.5, -53.0),
    "SouthEast": (26, 64.5, -39.0),
    "NorthAndCentralEast": (3, 73.0, -18.0),
}
CIS_REGIONS: Final = {
    "EA": (42, 72.0, -68.0),
    "FOXE": (39, 67.5, -79.0),
    "NFLD": (39, 53.0, -54.0),
    "WA": (32, 71.0, -135.0),
    "MID": (25, 74.0, -95.0),
    "HA": (20, 60.0, -85.0),
}

NEAR_RANGE_DEG: Final = (19.5, 21.0)
FAR_RANGE_DEG: Final = (45.8, 47.0)
_GEOD: Final = Geod(ellps="WGS84")


@dataclass(frozen=True)
class SceneIdentity:
    """Who and when: the names a scene carries.

    Attributes:
        time: Sentinel-1 acquisition start.
        service: ``dmi`` or ``cis``.
        region: Ice-service chart region.
        scene_name: ``{YYYYMMDDThhmmss}_{svc}``.
        original_id: Raw file name.
        icechart_id: Chart id (``dmi_..._RIC`` or ``cis_SGRDI..._pl_a``).
        centre_lat: Scene centre latitude (degrees).
        centre_lon: Scene centre longitude (degrees).
    """

    time: datetime
    service: str
    region: str
    scene_name: str
    original_id: str
    icechart_id: str
    centre_lat: float
    centre_lon: float

    @property
    def month(self) -> int:
        """Calendar month of the acquisition (1..12)."""
        return self.time.month


def draw_time(rng: np.random.Generator) -> datetime:
    """Draw an acquisition start with the training list's year and month distribution."""
    years = np.array(list(YEAR_WEIGHTS))
    pw = np.array(list(YEAR_WEIGHTS.values()), dtype=float)
    year = int(rng.choice(years, p=pw / pw.sum()))
    pm = np.array(MONTH_WEIGHTS, dtype=float)
    month = int(rng.choice(np.arange(1, 13), p=pm / pm.sum()))
    day = int(rng.integers(1, 29))
    seconds = int(rng.integers(0, 86400))
    return datetime(year, month, day) + timedelta(seconds=seconds)


def make_identity(
    rng: np.random.Generator, service: str | None = None, time: datetime | None = None
) -> SceneIdentity:
    """Draw a scene's time, service, region and build its names.

    Args:
        rng: Random generator.
        service: ``dmi``/``cis``, or ``None`` to draw (DMI 315 : CIS 197 as in the list).
        time: Acquisition start, or ``None`` to draw one.
    """
    # The service and time are drawn even when given, so the rest of the stream (region,
    # orbit numbers) does not depend on whether they were given.
    drawn_service = "dmi" if rng.random() < 315 / 512 else "cis"
    drawn_time = draw_time(rng)
    service = service or drawn_service
    t = drawn_time if time is None else time.replace(microsecond=0)
    regions = DMI_REGIONS if service == "dmi" else CIS_REGIONS
    names = list(regions)
    pr = np.array([regions[n][0] for n in names], dtype=float)
    region = names[int(rng.choice(len(names), p=pr / pr.sum()))]
    _, lat0, lon0 = regions[region]
    lat = float(np.clip(lat0 + rng.uniform(-1.5, 1.5), 50.0, 84.0))
    lon = float(lon0 + rng.uniform(-3.0, 3.0))
    platform = "S1A" if (t.year == 2018 and rng.random() < 0.5) or rng.random() < 0.45 else "S1B"
    ref_day = datetime(2014, 4, 3) if platform == "S1A" else datetime(2016, 4, 25)
    orbit = int((t - ref_day).total_seconds() / 86400 * 175 / 12) % 1_000_000
    datatake = int(rng.integers(0, 0xFFFFFF))
    uid = int(rng.integers(0, 0xFFFF))
    start = f"{t:%Y%m%dT%H%M%S}"
    stop = f"{t + timedelta(seconds=60):%Y%m%dT%H%M%S}"
    chart_time = t + timedelta(minutes=int(rng.integers(-90, 90)))
    if service == "dmi":
        chart = f"dmi_{chart_time:%Y%m%d%H%M}_{region}_RIC"
    else:
        chart = f"cis_SGRDI{region}_{chart_time:%Y%m%dT%H%M}Z_pl_a"
    original = (
        f"{platform}_EW_GRDM_1SDH_{start}_{stop}_{orbit:06d}_{datatake:06X}_{uid:04X}"
        f"_icechart_{chart}.nc"
    )
    return SceneIdentity(
        time=t,
        service=service,
        region=region,
        scene_name=f"{start}_{service}",
        original_id=original,
        icechart_id=chart,
        centre_lat=lat,
        centre_lon=lon,
    )


# ----------------------------------------------------------------------------- footprint


def swath_footprint(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Return the slanted valid-SAR footprint: a quadrilateral inside the array.

    The left and right data edges are slanted lines (each end inset by 0-12 % of the
    width, one end of each edge touching the array border) and a few lines at the top
    and bottom may be empty, as in the published scenes' figures.
    """
    h, w = shape
    rows = np.arange(h, dtype=np.float32)[:, None] / max(h - 1, 1)
    cols = np.arange(w, dtype=np.float32)[None, :]
    left = np.array([rng.uniform(0.0, 0.12), 0.0])[rng.permutation(2)] * w
    right = np.array([rng.uniform(0.0, 0.12), 0.0])[rng.permutation(2)] * w
    x_left = left[0] + (left[1] - left[0]) * rows
    x_right = (w - 1) - (right[0] + (right[1] - right[0]) * rows)
    valid = (cols >= x_left) & (cols <= x_right)
    top = int(rng.integers(0, max(1, h // 100) + 1))
    bottom = int(rng.integers(0, max(1, h // 100) + 1))
    valid[:top] = False
    if bottom:
        valid[h - bottom :] = False
    return valid


# ----------------------------------------------------------------------------- incidence angle


@dataclass(frozen=True)
class SwathGeometry:
    """Incidence-angle model of the swath.

    Attributes:
        near_deg: Incidence angle at sample 0.
        far_deg: Incidence angle at the last sample.
    """

    near_deg: float
    far_deg: float

    def incidence_at(self, sample40: np.ndarray, n_samples40: int) -> np.ndarray:
        """Incidence angle (deg) at raw 40 m sample coordinates (flat-earth arctan law)."""
        frac = np.asarray(sample40, dtype=np.float64) / max(n_samples40 - 1, 1)
        t0, t1 = np.tan(np.deg2rad(self.near_deg)), np.tan(np.deg2rad(self.far_deg))
        return np.rad2deg(np.arctan(t0 + (t1 - t0) * frac))


def draw_swath(rng: np.random.Generator) -> SwathGeometry:
    """Draw near- and far-range incidence angles of an EW swath."""
    return SwathGeometry(float(rng.uniform(*NEAR_RANGE_DEG)), float(rng.uniform(*FAR_RANGE_DEG)))


def tiepoint_axes(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Line and sample positions (raw 40 m units) of the 21 x 21 tie-point grid."""
    h, w = shape
    lines = np.linspace(0.0, 2 * h - 1, TIEPOINT_SHAPE[0])
    samples = np.linspace(0.0, 2 * w - 1, TIEPOINT_SHAPE[1])
    return lines, samples


def pixel_incidence(shape: tuple[int, int], tiepoints: TiePoints) -> np.ndarray:
    """Incidence angle of every 80 m column, interpolated from the tie points.

    The tie-point incidence angle varies with the sample only, so the bilinear
    interpolation at 40 m coordinates ``2 j + 0.5`` reduces to this 1-D interpolation.

    Returns:
        float32 array of shape ``(width,)``.
    """
    n = TIEPOINT_SHAPE[1]
    samples = tiepoints.sample[:n]
    theta = tiepoints.incidence_angle[:n]
    cols40 = 2.0 * np.arange(shape[1]) + 0.5
    return np.interp(cols40, samples, theta).astype(np.float32)


def make_tiepoints(
    shape: tuple[int, int],
    identity: SceneIdentity,
    swath: SwathGeometry,
    rng: np.random.Generator,
) -> TiePoints:
    """Build the 441 tie points: positions, incidence angle, latitude/longitude, height.

    The scene centre sits at ``identity``'s centre; lines run along a near-polar
    ground track (heading drawn for an ascending or descending pass), samples to its
    right (Sentinel-1 looks right). Heights are 0 here; the generator raises the
    points that fall on land.
    """
    lines, samples = tiepoint_axes(shape)
    line = np.repeat(lines, TIEPOINT_SHAPE[1])
    sample = np.tile(samples, TIEPOINT_SHAPE[0])
    ascending = rng.random() < 0.5
    heading = float(rng.uniform(-25.0, -8.0) if ascending else rng.uniform(188.0, 205.0))
    along_km = (line - lines[-1] / 2) * 0.04
    across_km = (sample - samples[-1] / 2) * 0.04
    lat0 = np.full(line.shape, identity.centre_lat)
    lon0 = np.full(line.shape, identity.centre_lon)
    az_along = np.where(along_km >= 0, heading, heading + 180.0)
    lon1, lat1, back = _GEOD.fwd(lon0, lat0, az_along, np.abs(along_km) * 1000.0)
    # forward azimuth of the track at the new point, then turn right for range
    track = np.where(along_km >= 0, back + 180.0, back)
    az_across = np.where(across_km >= 0, track + 90.0, track - 90.0)
    lon2, lat2, _ = _GEOD.fwd(lon1, lat1, az_across, np.abs(across_km) * 1000.0)
    lon2 = (np.asarray(lon2) + 180.0) % 360.0 - 180.0
    return TiePoints(
        line=line.astype(np.float64),
        sample=sample.astype(np.float64),
        latitude=np.asarray(lat2, dtype=np.float64),
        longitude=lon2.astype(np.float64),
        incidence_angle=swath.incidence_at(sample, 2 * shape[1]),
        height=np.zeros(line.shape, dtype=np.float64),
    )
