"""Masked losses: 255 ignored, class weights, regression on class indices, zero-label batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from icecontext.training.losses import (
    MultiTaskLoss,
    class_weights_from_histogram,
    masked_cross_entropy,
    masked_mse,
)


def _batch(seed=0, b=2, h=5, w=6):
    g = torch.Generator().manual_seed(seed)
    logits = {
        "SIC": torch.randn(b, 1, h, w, generator=g) * 3 + 5,
        "SOD": torch.randn(b, 6, h, w, generator=g),
        "FLOE": torch.randn(b, 7, h, w, generator=g),
    }
    targets = {
        "SIC": torch.randint(0, 11, (b, h, w), generator=g),
        "SOD": torch.randint(0, 6, (b, h, w), generator=g),
        "FLOE": torch.randint(0, 7, (b, h, w), generator=g),
    }
    for t in targets.values():
        t[:, :2, :3] = 255
    return logits, targets


def test_cross_entropy_ignores_masked_pixels():
    logits, targets = _batch()
    got = masked_cross_entropy(logits["SOD"], targets["SOD"])
    valid = targets["SOD"] != 255
    per_pixel = F.cross_entropy(logits["SOD"], targets["SOD"].clamp(max=5), reduction="none")
    assert torch.isclose(got, per_pixel[valid].mean(), atol=1e-6)
    # changing logits at masked pixels changes nothing
    logits2 = logits["SOD"].clone()
    logits2[:, :, :2, :3] += 100
    assert torch.isclose(masked_cross_entropy(logits2, targets["SOD"]), got)


def test_weighted_cross_entropy_matches_torch_weighted_mean():
    logits, targets = _batch(1)
    w = torch.tensor([0.5, 1.0, 2.0, 3.0, 1.0, 0.1])
    got = masked_cross_entropy(logits["SOD"], targets["SOD"], w)
    ref = F.cross_entropy(logits["SOD"], targets["SOD"], weight=w, ignore_index=255)
    assert torch.isclose(got, ref, atol=1e-6)


def test_mse_on_class_index_and_weights():
    logits, targets = _batch(2)
    valid = targets["SIC"] != 255
    ref = ((logits["SIC"][:, 0] - targets["SIC"].float())[valid] ** 2).mean()
    assert torch.isclose(masked_mse(logits["SIC"], targets["SIC"]), ref, atol=1e-5)
    w = torch.arange(1, 12, dtype=torch.float32)
    err = (logits["SIC"][:, 0] - targets["SIC"].float())[valid] ** 2
    ww = w[targets["SIC"][valid]]
    assert torch.isclose(masked_mse(logits["SIC"], targets["SIC"], w), (ww * err).sum() / ww.sum())


def test_all_masked_task_gives_zero_with_gradient_path():
    logits, targets = _batch()
    targets["FLOE"][:] = 255
    logits["FLOE"].requires_grad_(True)
    loss = masked_cross_entropy(logits["FLOE"], targets["FLOE"])
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.all(logits["FLOE"].grad == 0)
    # SIC regression and class weights too
    targets["SIC"][:] = 255
    pred = logits["SIC"][:, :1].detach().requires_grad_(True)
    for weights in (None, torch.ones(11)):
        loss = masked_mse(pred, targets["SIC"], weights)
        assert loss.item() == 0.0 and loss.requires_grad
        weighted = masked_cross_entropy(logits["FLOE"], targets["FLOE"], torch.ones(7))
        assert weighted.item() == 0.0


def test_multitask_total_is_weighted_sum():
    logits, targets = _batch(3)
    crit = MultiTaskLoss("mse", {"SIC": 2.0, "SOD": 1.0, "FLOE": 0.5})
    total, parts = crit(logits, targets)
    assert set(parts) == {"SIC", "SOD", "FLOE"}
    assert torch.isclose(total, 2 * parts["SIC"] + parts["SOD"] + 0.5 * parts["FLOE"])
    with pytest.raises(ValueError, match="1-channel SIC head"):
        crit({**logits, "SIC": torch.zeros(2, 11, 5, 6)}, targets)
    ce = MultiTaskLoss("cross_entropy", {"SIC": 1, "SOD": 1, "FLOE": 1})
    _, parts_ce = ce({**logits, "SIC": torch.zeros(2, 11, 5, 6)}, targets)
    assert torch.isclose(
        parts_ce["SIC"], torch.tensor(np.log(11.0), dtype=torch.float32), atol=1e-5
    )


def test_class_weights_from_histogram():
    hist = np.zeros(256)
    hist[:3] = [600, 300, 100]
    hist[255] = 10_000  # masked pixels do not count
    w = class_weights_from_histogram(hist, 4, "inverse").numpy()
    freq = np.array([0.6, 0.3, 0.1])
    # inverse frequency, normalised so the pixel-weighted mean weight is 1; absent class 0
    np.testing.assert_allclose(w[:3] / w[0], 0.6 / freq, rtol=1e-6)
    assert w[3] == 0.0
    assert np.isclose((w[:3] * freq).sum(), 1.0)
    s = class_weights_from_histogram(hist, 4, "sqrt_inverse").numpy()
    np.testing.assert_allclose(s[:3] / s[0], np.sqrt(0.6 / freq), rtol=1e-6)
    assert class_weights_from_histogram(hist, 4, "none") is None
    with pytest.raises(ValueError, match="no valid"):
        class_weights_from_histogram(np.zeros(256), 4)


def test_losses_and_batch_norm_stay_float32_under_bf16_autocast():
    """Under bf16 autocast (GPU and native-bf16 CPU training) the network's outputs are
    bf16, but the losses sum in float32 and BatchNorm keeps float32 statistics."""
    from icecontext.models.config import ModelConfig
    from icecontext.models.multitask import build_model

    cfg = ModelConfig.model_validate(
        {"encoder": {"name": "resnet18", "depth": "layer2", "output_stride": 8},
         "aspp": {"rates": [1, 2], "channels": 8}}
    )  # fmt: skip
    model = build_model(cfg, 3, seed=0).train()
    x = torch.randn(2, 3, 32, 32)
    _, targets = _batch(b=2, h=32, w=32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outputs = model(x)
        sic = "mse" if outputs["SIC"].shape[1] == 1 else "cross_entropy"
        weights = {"SIC": 1.0, "SOD": 1.0, "FLOE": 1.0}
        total, parts = MultiTaskLoss(sic, weights)(outputs, targets)
    assert outputs["SOD"].dtype == torch.bfloat16
    assert total.dtype == torch.float32 and all(p.dtype == torch.float32 for p in parts.values())
    assert torch.isfinite(total)
    total.backward()
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(m.running_mean.dtype == torch.float32 for m in norms)
    assert all(torch.isfinite(m.running_var).all() for m in norms)
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in model.parameters())
