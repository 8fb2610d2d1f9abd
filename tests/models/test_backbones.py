"""Encoders: output strides, truncation, both backends, local pretrained weights adapted to C inputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from icecontext.errors import ConfigError
from icecontext.models.backbones import adapt_first_conv, build_encoder, load_pretrained
from icecontext.models.config import EncoderConfig


@pytest.mark.parametrize(
    ("backend", "name", "depth", "stride", "channels"),
    [
        ("timm", "resnet18", "layer1", 4, 64),
        ("torchvision", "resnet18", "layer1", 4, 64),
        ("timm", "resnet18", "layer2", 8, 128),
        ("timm", "resnet18", "layer3", 8, 256),
        ("timm", "resnet34", "layer4", 16, 512),
        ("timm", "resnet50", "layer4", 32, 2048),
        ("torchvision", "resnet18", "layer3", 16, 256),
        ("torchvision", "resnet50", "layer3", 8, 1024),
        ("torchvision", "resnet50", "layer4", 16, 2048),
    ],
)
def test_stride_depth_and_channels(
    backend: str, name: str, depth: str, stride: int, channels: int
) -> None:
    cfg = EncoderConfig(name=name, backend=backend, depth=depth, output_stride=stride)
    with torch.device("meta"):
        enc = build_encoder(cfg, 6)
        y = enc(torch.empty(1, 6, 100, 132))
    assert (enc.out_channels, enc.output_stride, enc.in_channels) == (channels, stride, 6)
    assert y.shape == (1, channels, -(-100 // stride), -(-132 // stride))
    kept = [n for n, _ in enc.named_children() if n.startswith("layer")]
    assert kept[-1] == depth  # truncated: later stages are not even built


def test_backends_build_the_same_architecture() -> None:
    """timm and torchvision ResNets to layer3 have identical parameter shapes per key."""
    with torch.device("meta"):
        a = build_encoder(EncoderConfig(name="resnet50", backend="timm"), 18)
        b = build_encoder(EncoderConfig(name="resnet50", backend="torchvision"), 18)
    sa = {k: v.shape for k, v in a.state_dict().items()}
    sb = {k: v.shape for k, v in b.state_dict().items()}
    assert sa == sb


def _fake_imagenet_state(name: str, path: Path, seed: int = 0) -> dict[str, torch.Tensor]:
    """A full RGB ResNet state dict with random values (layer4 and fc included)."""
    import torchvision

    torch.manual_seed(seed)
    net = getattr(torchvision.models, name)(weights=None)
    state = {
        k: torch.randn_like(v.float()) if v.is_floating_point() else v
        for k, v in net.state_dict().items()
    }
    torch.save(state, path)
    return state


@pytest.mark.parametrize("backend", ["timm", "torchvision"])
@pytest.mark.parametrize("in_ch", [1, 3, 5, 18])
def test_pretrained_file_loads_and_first_layer_is_adapted(
    tmp_path: Path, backend: str, in_ch: int
) -> None:
    path = tmp_path / "resnet18_imagenet.pth"
    state = _fake_imagenet_state("resnet18", path)
    cfg = EncoderConfig(name="resnet18", backend=backend, pretrained=path)
    enc = build_encoder(cfg, in_ch)
    got = enc.state_dict()
    rgb = state["conv1.weight"]  # (64, 3, 7, 7)
    w = got["conv1.weight"]
    assert w.shape == (64, in_ch, 7, 7)
    if in_ch == 1:
        expected = rgb.sum(dim=1, keepdim=True)
    else:
        reps = -(-in_ch // 3)
        expected = rgb.repeat(1, reps, 1, 1)[:, :in_ch] * (3 / in_ch)
    torch.testing.assert_close(w, expected)
    # C a multiple of 3: a constant input gives the same response as on the RGB weights
    if in_ch % 3 == 0:
        torch.testing.assert_close(w.sum(dim=1), rgb.sum(dim=1))
    # every other kept weight is copied verbatim; layer4/fc are ignored
    for key, value in got.items():
        if key != "conv1.weight" and value.is_floating_point():
            assert torch.equal(value, state[key]), key
    assert not any(k.startswith(("layer4", "fc")) for k in got)


def test_pretrained_safetensors_and_wrapped_checkpoints(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    state = _fake_imagenet_state("resnet34", tmp_path / "plain.pth")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "r34.safetensors"))
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "wrap.pt")
    for file in ("r34.safetensors", "wrap.pt"):
        enc = build_encoder(EncoderConfig(name="resnet34", pretrained=tmp_path / file), 3)
        assert torch.equal(
            enc.state_dict()["layer3.5.conv2.weight"], state["layer3.5.conv2.weight"]
        )
        assert torch.equal(enc.state_dict()["conv1.weight"], state["conv1.weight"])


def test_pretrained_errors_name_the_option_and_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pth"
    with pytest.raises(ConfigError) as info:
        build_encoder(EncoderConfig(pretrained=missing), 3)
    assert info.value.option == "model.encoder.pretrained" and str(missing) in str(info.value)
    assert "nothing is downloaded" in str(info.value)

    r18 = tmp_path / "r18.pth"
    _fake_imagenet_state("resnet18", r18)
    with pytest.raises(ConfigError) as info:  # resnet18 weights into a resnet34
        build_encoder(EncoderConfig(name="resnet34", pretrained=r18), 3)
    assert info.value.option == "model.encoder.pretrained" and "lacks" in str(info.value)

    r50 = tmp_path / "r50.pth"
    _fake_imagenet_state("resnet50", r50)
    with torch.device("meta"):
        enc = build_encoder(EncoderConfig(name="resnet101"), 3)
    with pytest.raises(ConfigError, match="lacks"):
        load_pretrained(enc, r50)

    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError) as info:
        build_encoder(EncoderConfig(pretrained=junk), 3)
    assert "cannot read weights file" in str(info.value) and str(junk) in str(info.value)


def test_adapt_first_conv_keeps_matching_weights() -> None:
    w = torch.randn(8, 3, 3, 3)
    assert adapt_first_conv(w, 3) is w
    assert adapt_first_conv(w, 7).shape == (8, 7, 3, 3)


def test_width_multiplier_narrows_every_stage() -> None:
    cfg = EncoderConfig(name="resnet18", depth="layer2", output_stride=8, width=0.5)
    enc = build_encoder(cfg, 3)
    assert enc.out_channels == 64
    assert enc.conv1.out_channels == 64  # the stem keeps its width
    assert enc.layer1[0].conv1.out_channels == 32
    y = enc(torch.randn(1, 3, 40, 40))
    assert y.shape == (1, 64, 5, 5)
    full = build_encoder(EncoderConfig(name="resnet18", depth="layer2", output_stride=8), 3)
    n = sum(p.numel() for p in enc.parameters())
    assert n < 0.3 * sum(p.numel() for p in full.parameters())


@pytest.mark.parametrize(
    ("encoder", "option", "words"),
    [
        ({"width": 0.5, "backend": "torchvision"}, "model.encoder.width", "backend=timm"),
        ({"width": 0.1}, "model.encoder.width", "whole number"),
        ({"width": 0.5, "pretrained": "w.pth"}, "model.encoder.pretrained", "standard width"),
        ({"depth": "layer2", "output_stride": 4}, "model.encoder.output_stride", "layer1"),
        ({"depth": "layer1", "output_stride": 8}, "model.encoder.output_stride", "impossible"),
    ],
)
def test_width_and_layer1_errors_name_the_option(encoder, option, words) -> None:
    from icecontext.models.config import ModelConfig

    with pytest.raises(ConfigError) as err:
        ModelConfig.model_validate({"encoder": encoder})
    assert err.value.option == option and words in str(err.value)
