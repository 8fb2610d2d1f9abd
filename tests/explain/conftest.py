"""Fixtures for the Grad-CAM tests: a tiny multi-task network and an in-memory scene."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from icecontext.data.io.format import CHARTS
from icecontext.models.aspp import ASPP
from icecontext.models.backbones import ResNetEncoder
from icecontext.models.config import ModelConfig, Pooling
from icecontext.models.multitask import Decoder, MultiTaskModel, build_model

TINY_MODEL = {
    "encoder": {"name": "resnet18", "depth": "layer2", "output_stride": 8},
    "aspp": {"rates": [1, 2], "channels": 8, "pooling": "none", "dropout": 0.0},
}
"""The smallest real configuration (ResNet-18 to layer2): for checkpoints and the CLI."""


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()
    )


def tiny_model(
    in_channels: int = 3, seed: int = 0, rates=(1, 2), sic_regression: bool = True
) -> MultiTaskModel:
    """A MultiTaskModel with a 3-convolution stride-4 encoder (milliseconds per pass).

    Same module names and methods as a built model (``encoder.layer2``,
    ``decoders.<T>.aspp.branches.<i>``, ``decoders.<T>.project``, ``heads.<T>``);
    BatchNorm statistics are randomised so that eval mode is not the identity.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = ResNetEncoder(
            OrderedDict(conv1=_conv(in_channels, 8, 2), layer1=_conv(8, 8, 2), layer2=_conv(8, 8)),
            out_channels=8,
            output_stride=4,
            in_channels=in_channels,
        )
        decoders = nn.ModuleDict(
            {t: Decoder(ASPP(8, list(rates), 8, Pooling("none"), 0.0), 8) for t in CHARTS}
        )
        outs = {"SIC": 1 if sic_regression else 11, "SOD": 6, "FLOE": 7}
        heads = nn.ModuleDict({t: nn.Conv2d(8, n, 1) for t, n in outs.items()})
        model = MultiTaskModel(encoder, decoders, heads, sic_regression)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=gen))
                m.running_var.copy_(1 + 0.2 * torch.rand(m.num_features, generator=gen))
    return model.eval()


def real_model(in_channels: int = 3, seed: int = 0) -> MultiTaskModel:
    """The tiny real configuration built by ``build_model`` (as checkpoints rebuild it)."""
    return build_model(ModelConfig.model_validate(TINY_MODEL), in_channels, seed=seed).eval()


class MemorySource:
    """A scene in memory with the SceneSource reading interface."""

    def __init__(self, inputs, charts=None, valid=None, downsample=1, name="20190101T000000_dmi"):
        self.name = name
        self.inputs = np.asarray(inputs, dtype=np.float32)
        self.shape = self.inputs.shape[1:]
        self.full_shape = (self.shape[0] * downsample, self.shape[1] * downsample)
        self.downsample = downsample
        self.features = [f"f{i}" for i in range(self.inputs.shape[0])]
        self.valid = np.ones(self.shape, bool) if valid is None else np.asarray(valid, bool)
        if charts is None:
            charts = {c: np.full(self.shape, 255, np.uint8) for c in CHARTS}
        self.charts = charts
        self.reads = []

    def _check(self, window):
        r, c, h, w = window
        assert r >= 0 and c >= 0 and r + h <= self.shape[0] and c + w <= self.shape[1], window

    def read_inputs(self, window, features):
        self._check(window)
        self.reads.append(window)
        r, c, h, w = window
        idx = [self.features.index(f) for f in features]
        return self.inputs[idx, r : r + h, c : c + w].copy()

    def read_charts(self, window):
        self._check(window)
        r, c, h, w = window
        return {k: v[r : r + h, c : c + w].copy() for k, v in self.charts.items()}

    def valid_mask(self, window):
        self._check(window)
        r, c, h, w = window
        return self.valid[r : r + h, c : c + w].copy()


def blocky_charts(shape, seed=0, block=32):
    """Random class blocks for the three charts (water shared, as in real charts)."""
    rng = np.random.default_rng(seed)
    h, w = shape
    nb = (-(-h // block), -(-w // block))
    sod = rng.integers(0, 6, nb).repeat(block, 0).repeat(block, 1)[:h, :w].astype(np.uint8)
    sic = np.where(sod == 0, 0, rng.integers(1, 11, nb).repeat(block, 0).repeat(block, 1)[:h, :w])
    floe = np.where(sod == 0, 0, rng.integers(1, 7, nb).repeat(block, 0).repeat(block, 1)[:h, :w])
    return {"SIC": sic.astype(np.uint8), "SOD": sod, "FLOE": floe.astype(np.uint8)}


@pytest.fixture(scope="module")
def model() -> MultiTaskModel:
    return tiny_model()


@pytest.fixture(scope="module")
def scene() -> MemorySource:
    """A 256 x 256 scene (3 channels) with blocky charts and a no-data corner."""
    rng = np.random.default_rng(1)
    h = w = 256
    charts = blocky_charts((h, w), seed=2)
    x = rng.normal(0, 1, (3, h, w)).astype(np.float32)
    x[0] += charts["SOD"] * 0.5
    valid = np.ones((h, w), bool)
    valid[:40, :60] = False
    x[:, ~valid] = 0
    for c in charts.values():
        c[~valid] = 255
    return MemorySource(x, charts, valid)
