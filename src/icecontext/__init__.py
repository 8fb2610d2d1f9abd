"""icecontext: multi-task sea ice charting with controllable spatial context.

One network predicts sea ice concentration (SIC), stage of development (SOD) and
floe size (FLOE) per pixel from Sentinel-1 SAR, AMSR2 and auxiliary inputs of the
AI4Arctic Sea Ice Challenge format; the receptive field of its ASPP decoders is a
configuration option, so spatial context can be studied as an experimental variable.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("icecontext")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
