"""Trained context: shares of positions at which ASPP taps read data, refusal, fields."""

from __future__ import annotations

import logging
import math
from typing import Any

import pytest
import torch

from icecontext.errors import ConfigError
from icecontext.models import trained_context as tc
from icecontext.models.backbones import build_encoder
from icecontext.models.config import EncoderConfig, ModelConfig
from icecontext.models.multitask import build_model
from icecontext.models.receptive_field import theoretical_receptive_fields
from icecontext.models.trained_context import (
    axis_share,
    check_trained_context,
    feature_cells,
    format_trained_context,
    smallest_half_trained_patch,
    smallest_trained_patch,
    trained_context,
    trained_fields,
)


def _cfg(section: dict[str, Any]) -> ModelConfig:
    return ModelConfig.model_validate(section)


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tc, "_warned", set())


@pytest.mark.parametrize(
    ("name", "backend", "depth", "stride"),
    [
        ("resnet18", "timm", "layer3", 16),
        ("resnet18", "timm", "layer2", 8),
        ("resnet50", "torchvision", "layer3", 16),
        ("resnet34", "timm", "layer3", 8),
    ],
)
def test_feature_cells_are_what_the_encoders_produce(name, backend, depth, stride) -> None:
    torch.set_num_threads(1)
    enc = build_encoder(
        EncoderConfig(name=name, backend=backend, depth=depth, output_stride=stride), 2
    )
    enc.eval()
    for h, w in [(64, 72), (100, 129), (128, 97)]:
        with torch.no_grad():
            y = enc(torch.zeros(1, 2, h, w))
        assert tuple(y.shape[-2:]) == (feature_cells(h, stride), feature_cells(w, stride))
        assert feature_cells(h, stride) == math.ceil(h / stride)


def test_hand_checked_shares_at_an_8_cell_map() -> None:
    assert feature_cells(128, 16) == 8
    assert axis_share(6, 8) == 2 / 8  # positions 0 and 1 reach 6 and 7
    assert axis_share(7, 8) == 1 / 8  # only position 0 reaches cell 7
    assert axis_share(8, 8) == 0  # never inside the map
    assert axis_share(1, 8) == 7 / 8
    ctx = trained_context(_cfg({"aspp": {"rates": [6, 7, 8]}}), 128)
    assert ctx.cells == (8, 8) and ctx.output_stride == 16
    rates = {b.rate: b for b in ctx.tasks["SOD"].rates}
    assert (rates[6].axis, rates[6].diagonal, rates[6].trained) == (0.25, 0.0625, True)
    assert (rates[7].axis, rates[7].diagonal, rates[7].trained) == (0.125, 1 / 64, True)
    assert (rates[8].axis, rates[8].diagonal, rates[8].trained) == (0.0, 0.0, False)
    assert rates[6].under_half and rates[7].under_half and not rates[8].under_half
    assert [(t, b.rate) for t, b in ctx.untrained] == [("SIC", 8), ("SOD", 8), ("FLOE", 8)]


def test_rectangular_patch_axis_is_the_narrower_and_diagonal_the_product() -> None:
    ctx = trained_context(_cfg({"aspp": {"rates": [4]}}), (128, 256))  # 8 x 16 cells
    (b,) = ctx.tasks["SIC"].rates
    assert b.axis == 4 / 8 and b.diagonal == pytest.approx(4 / 8 * 12 / 16)


def test_smallest_patches() -> None:
    # W >= r + 1 cells trains rate r; W >= 2 r trains it on half the positions
    assert smallest_trained_patch(24, 16) == 400
    assert smallest_half_trained_patch(24, 16) == 768
    assert smallest_trained_patch(72, 16) == 1168 and smallest_half_trained_patch(72, 16) == 2304
    for rate in (1, 5, 24):
        p = smallest_trained_patch(rate, 16)
        assert axis_share(rate, feature_cells(p, 16)) > 0
        assert axis_share(rate, feature_cells(p - 16, 16)) == 0
        h = smallest_half_trained_patch(rate, 16)
        assert (
            axis_share(rate, feature_cells(h, 16))
            >= 0.5
            > axis_share(rate, feature_cells(h - 16, 16))
        )


def test_pooling_and_1x1_branches_always_read_data() -> None:
    for pooling in ("avg:5", "global"):
        ctx = trained_context(_cfg({"aspp": {"rates": [1], "pooling": pooling}}), 16)
        branches = ctx.tasks["FLOE"].branches
        assert [b.name for b in branches] == ["1x1", "rate 1", f"pool {pooling}"]
        assert branches[0].trained and branches[-1].trained
        assert branches[-1].axis == branches[-1].diagonal == 1.0
    none = trained_context(_cfg({"aspp": {"rates": [1], "pooling": "none"}}), 16)
    assert [b.name for b in none.tasks["SIC"].branches] == ["1x1", "rate 1"]


def test_refusal_names_task_rate_patch_cells_and_smallest_patch() -> None:
    cfg = _cfg({"aspp": {"rates": [24, 48, 72]}})
    with pytest.raises(ConfigError) as exc:
        check_trained_context(cfg, 128)
    err = exc.value
    assert err.option == "model.aspp.rates"
    assert err.problem.startswith(
        "rate 24 of task SIC reads only zero padding in 128 px training patches "
        "(8 x 8 feature cells at output stride 16); the smallest patch (a multiple of 16 px) "
        "that trains it is 400 px"
    )
    assert "every rate trains from 1168 px" in err.problem
    assert "model.allow_untrained_taps: true" in err.problem


def test_refusal_names_the_per_task_option() -> None:
    cfg = _cfg({"aspp": {"rates": [1, 2]}, "task_rates": {"FLOE": [3, 9]}})
    with pytest.raises(ConfigError) as exc:
        check_trained_context(cfg, 128)
    assert exc.value.option == "model.task_rates.FLOE" and "rate 9 of task FLOE" in str(exc.value)
    # a smaller output stride doubles the cells: rate 9 then trains
    check_trained_context(cfg, 128, output_stride=8)


def test_allow_untrained_taps_runs_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    cfg = _cfg({"aspp": {"rates": [2, 8]}, "allow_untrained_taps": True})
    with caplog.at_level(logging.WARNING, logger=tc.__name__):
        ctx = check_trained_context(cfg, 128)
        check_trained_context(cfg, 128)  # printed once
    allowed = [
        r.getMessage() for r in caplog.records if "allow_untrained_taps is true" in r.message
    ]
    assert len(allowed) == 1 and "rate 8 of task SIC" in allowed[0]
    rec = ctx.record()
    assert rec["allow_untrained_taps"] is True and rec["untrained_taps"] is True
    assert rec["feature_cells"] == [8, 8] and rec["patch_px"] == [128, 128]
    sic = {r["rate"]: r for r in rec["tasks"]["SIC"]["rates"]}
    assert sic[8]["trained"] is False and sic[8]["axis_share"] == 0
    assert sic[2]["axis_share"] == 0.75 and sic[2]["diagonal_share"] == 0.5625


def test_under_half_warns_once_per_task_and_rate(caplog: pytest.LogCaptureFixture) -> None:
    cfg = _cfg({"aspp": {"rates": [1, 5]}, "task_rates": {"SOD": [1, 4]}})
    with caplog.at_level(logging.WARNING, logger=tc.__name__):
        check_trained_context(cfg, 128)
        check_trained_context(cfg, 128)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2  # rate 5 of SIC and of FLOE; SOD's rate 4 trains on half
    assert lines[0].startswith("model.aspp.rates: rate 5 of task SIC reads data at only 38 %")
    assert "160 px patches train it on half" in lines[0]
    assert "FLOE" in lines[1]


def test_trained_and_applied_fields() -> None:
    torch.set_num_threads(1)
    cfg = _cfg(
        {
            "aspp": {"rates": [2, 10], "channels": 4, "dropout": 0.0},
            "task_rates": {"SOD": [1]},
            "allow_untrained_taps": True,
        }
    )
    theory = theoretical_receptive_fields(build_model(cfg, 2, seed=0))
    ctx = trained_context(cfg, 128)  # 8 cells: rate 10 untrained
    fields = trained_fields(theory, ctx, tile=512)
    # ResNet-18 to layer3: 211 px; + 16 (2 r + 2 + 1)
    sic = fields["SIC"]
    assert sic.theory_px == 211 + 16 * 23 == theory["SIC"].total_px
    assert sic.untrained_rates == (10,)
    # rate 10 dropped: the widest trained branch is rate 2 (211 + 16 * 7 = 323), then the
    # cap 2 * 128 - 1 = 255
    assert sic.trained_px == 255
    assert sic.applied_px == 579  # every rate, under the tile's cap of 1023
    assert trained_fields(theory, ctx, tile=200)["SIC"].applied_px == 399
    wide = trained_fields(theory, trained_context(cfg, 512))["SIC"]
    assert wide.trained_px == 579 and wide.applied_px is None and wide.untrained_rates == ()
    assert fields["SOD"].trained_px == 255 and fields["SOD"].untrained_rates == ()
    text = format_trained_context(ctx, fields, downsample=2, tile=512)
    assert "128 px training patches (8 x 8 feature cells at output stride 16)" in text
    row = next(line.split() for line in text.splitlines() if line.strip().startswith("10 "))
    assert row[1:3] == ["SIC", "FLOE"] and row[-1] == "UNTRAINED"
    sic_row = next(line.split() for line in text.splitlines() if line.startswith("SIC "))
    assert sic_row[1:7] == ["579", "92.64", "255", "40.80", "579", "92.64"]


def test_global_pooling_fields_are_capped_by_patch_and_tile() -> None:
    torch.set_num_threads(1)
    cfg = _cfg(
        {
            "encoder": {"depth": "layer2", "output_stride": 8},
            "aspp": {"rates": [1], "channels": 4, "pooling": "global"},
        }
    )
    theory = theoretical_receptive_fields(build_model(cfg, 2, seed=0))
    fields = trained_fields(theory, trained_context(cfg, 64), tile=96)
    assert fields["SIC"].theory_px is None
    assert (fields["SIC"].trained_px, fields["SIC"].applied_px) == (127, 191)


def test_fields_refuse_a_context_of_another_model() -> None:
    torch.set_num_threads(1)
    cfg = _cfg({"aspp": {"rates": [1], "channels": 4}})
    theory = theoretical_receptive_fields(build_model(cfg, 2, seed=0))
    other = trained_context(_cfg({"aspp": {"rates": [2]}}), 64)
    with pytest.raises(ValueError, match="different ASPP branches"):
        trained_fields(theory, other)


def test_allow_flag_is_saved_only_when_set() -> None:
    assert "allow_untrained_taps" not in ModelConfig().model_dump(mode="json")
    dumped = _cfg({"allow_untrained_taps": True}).model_dump(mode="json")
    assert dumped["allow_untrained_taps"] is True
    assert ModelConfig.model_validate(dumped).allow_untrained_taps
