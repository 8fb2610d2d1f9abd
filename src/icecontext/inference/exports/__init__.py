"""Writers of predicted ice charts: CF NetCDF, GeoTIFF, AutoICE upload file, quicklook PNG.

Every writer takes predicted class arrays (``uint8``, 255 = masked, on the scene's
80 m grid) and the scene dataset (:func:`icecontext.data.io.scene.open_scene`), writes
atomically, and raises :class:`ExportError` naming the folder when it cannot write.

* :func:`write_chart_netcdf` -- CF-1.11 NetCDF per scene (classes, SIC %, optional
  probabilities and confidence, lat/lon, provenance); its option groups are
  :class:`ProbabilityLayers`, :class:`NetCDFOptions` and :class:`ExportProvenance`.
* :func:`write_chart_geotiff` / :func:`write_chart_geotiffs` -- GeoTIFF per chart with
  tie-point GCPs, or reprojected to EPSG:3413 (:class:`GeoTIFFOptions`).
* :class:`UploadPackageWriter`, :func:`write_upload_package`,
  :func:`check_upload_package` -- the AutoICE ``upload_package.nc``.
* :func:`write_quicklook` -- PNG of HH beside the three class maps.
* :func:`write_scene_outputs` -- any of the above for one scene in one call.
"""

from icecontext.inference.exports.colours import CHART_COLOURS
from icecontext.inference.exports.geolocation import scene_latlon, tiepoint_pixel_positions
from icecontext.inference.exports.geotiff import (
    POLAR_STEREO_NORTH,
    GeoTIFFOptions,
    scene_gcps,
    warp_chart,
    write_chart_geotiff,
    write_chart_geotiffs,
)
from icecontext.inference.exports.netcdf import (
    ExportProvenance,
    NetCDFOptions,
    ProbabilityLayers,
    build_chart_dataset,
    confidence_map,
    write_chart_netcdf,
)
from icecontext.inference.exports.output import ExportError
from icecontext.inference.exports.per_scene import OUTPUT_FORMATS, write_scene_outputs
from icecontext.inference.exports.quicklook import render_quicklook, write_quicklook
from icecontext.inference.exports.upload import (
    UPLOAD_FILE_NAME,
    UploadPackageWriter,
    check_upload_package,
    write_upload_package,
)

__all__ = [
    "CHART_COLOURS",
    "OUTPUT_FORMATS",
    "POLAR_STEREO_NORTH",
    "UPLOAD_FILE_NAME",
    "ExportError",
    "ExportProvenance",
    "GeoTIFFOptions",
    "NetCDFOptions",
    "ProbabilityLayers",
    "UploadPackageWriter",
    "build_chart_dataset",
    "check_upload_package",
    "confidence_map",
    "render_quicklook",
    "scene_gcps",
    "scene_latlon",
    "tiepoint_pixel_positions",
    "warp_chart",
    "write_chart_geotiff",
    "write_chart_geotiffs",
    "write_chart_netcdf",
    "write_quicklook",
    "write_scene_outputs",
    "write_upload_package",
]
