"""One shared model-test base, parametrised over encoders, rates, strides, channels and SIC mode.

Every case checks the model contract: output shapes at odd input sizes, gradients
reaching every parameter, state-dict round trip, TorchScript reproducing eager
outputs, the class/probability rules, and one optimizer step on CPU that lowers the
loss (for each rate set of the acceptance list, and per-task mixes).
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from icecontext.models.config import ModelConfig
from icecontext.models.multitask import MultiTaskModel, build_model

# (id, model section, input channels)
CASES: list[tuple[str, dict[str, Any], int]] = [
    ("r18-rate1-avg", {"aspp": {"rates": [1]}}, 3),
    (
        "r18-246-none-cls",
        {"aspp": {"rates": [2, 4, 6], "pooling": "none"}, "sic_mode": "classification"},
        5,
    ),
    (
        "r34-os8-61218-global-1ch",
        {
            "encoder": {"name": "resnet34", "output_stride": 8},
            "aspp": {"rates": [6, 12, 18], "pooling": "global"},
        },
        1,
    ),
    ("r50-122436-18ch", {"encoder": {"name": "resnet50"}, "aspp": {"rates": [12, 24, 36]}}, 18),
    (
        "r18-layer4-os32-244872-cls",
        {
            "encoder": {"depth": "layer4", "output_stride": 32},
            "aspp": {"rates": [24, 48, 72]},
            "sic_mode": "classification",
        },
        2,
    ),
    (
        "r18-per-task-mix",
        {"task_rates": {"SIC": [1], "SOD": [2, 4, 6], "FLOE": [24, 48, 72]}},
        4,
    ),
    ("r18-shared", {"shared_decoder": True, "aspp": {"rates": [6, 12, 18]}}, 3),
    (
        "tv-r18-122436",
        {"encoder": {"backend": "torchvision"}, "aspp": {"rates": [12, 24, 36]}},
        18,
    ),
    (
        "tv-r50-os8-24",
        {
            "encoder": {"name": "resnet50", "backend": "torchvision", "output_stride": 8},
            "aspp": {"rates": [2, 4], "pooling": "avg:5"},
        },
        3,
    ),
    (
        "r18-layer2-os8-rate3",
        {"encoder": {"depth": "layer2", "output_stride": 8}, "aspp": {"rates": [3]}},
        3,
    ),
]

EXPECTED_CHANNELS = {
    "regression": {"SIC": 1, "SOD": 6, "FLOE": 7},
    "classification": {"SIC": 11, "SOD": 6, "FLOE": 7},
}


def _cfg(section: dict[str, Any]) -> ModelConfig:
    base: dict[str, Any] = {"aspp": {"channels": 8, "dropout": 0.1}, "project_channels": 8}
    merged = {**base, **section}
    merged["aspp"] = {**base["aspp"], **section.get("aspp", {})}
    return ModelConfig.model_validate(merged)


def _loss(
    model: MultiTaskModel, out: dict[str, torch.Tensor], y: dict[str, torch.Tensor]
) -> torch.Tensor:
    loss = torch.zeros(())
    for task, pred in out.items():
        if task == "SIC" and model.sic_regression:
            loss = loss + F.mse_loss(pred[:, 0], y[task].float())
        else:
            loss = loss + F.cross_entropy(pred, y[task])
    return loss


def _targets(b: int, h: int, w: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        t: torch.randint(0, n, (b, h, w), generator=g)
        for t, n in (("SIC", 11), ("SOD", 6), ("FLOE", 7))
    }


@pytest.fixture(scope="module", params=CASES, ids=[c[0] for c in CASES])
def case(request: pytest.FixtureRequest) -> tuple[ModelConfig, int, MultiTaskModel]:
    _, section, in_ch = request.param
    cfg = _cfg(section)
    return cfg, in_ch, build_model(cfg, in_ch, seed=0)


class TestModelContract:
    def test_forward_shapes_at_odd_size(
        self, case: tuple[ModelConfig, int, MultiTaskModel]
    ) -> None:
        cfg, in_ch, model = case
        model.eval()
        with torch.no_grad():
            out = model(torch.randn(2, in_ch, 97, 123))
        assert list(out) == ["SIC", "SOD", "FLOE"]
        for task, n in EXPECTED_CHANNELS[cfg.sic_mode].items():
            assert out[task].shape == (2, n, 97, 123)
            assert torch.isfinite(out[task]).all()
        # the encoder runs at the configured stride
        feats = model.encoder(torch.randn(1, in_ch, 97, 123))
        s = cfg.encoder.output_stride
        assert feats.shape[-2:] == (-(-97 // s), -(-123 // s))
        assert feats.shape[1] == model.encoder.out_channels

    def test_backward_reaches_every_parameter(
        self, case: tuple[ModelConfig, int, MultiTaskModel]
    ) -> None:
        _, in_ch, model = case
        model.train()
        model.zero_grad()
        x = torch.randn(2, in_ch, 40, 40, requires_grad=True)
        out = model(x)
        _loss(model, out, _targets(2, 40, 40, seed=1)).backward()
        assert x.grad is not None and x.grad.shape == x.shape
        missing = [n for n, p in model.named_parameters() if p.grad is None]
        assert not missing
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)

    def test_state_dict_round_trip(
        self, case: tuple[ModelConfig, int, MultiTaskModel], tmp_path: Path
    ) -> None:
        cfg, in_ch, model = case
        path = tmp_path / "weights.pt"
        torch.save(model.state_dict(), path)
        other = build_model(cfg, in_ch, seed=123)
        x = torch.randn(1, in_ch, 64, 48)
        model.eval()
        other.eval()
        with torch.no_grad():
            assert not torch.equal(model(x)["SOD"], other(x)["SOD"])
            other.load_state_dict(torch.load(path, weights_only=True))
            a, b = model(x), other(x)
        for task in a:
            assert torch.equal(a[task], b[task])

    def test_torchscript_reproduces_eager(
        self, case: tuple[ModelConfig, int, MultiTaskModel]
    ) -> None:
        _, in_ch, model = case
        model.eval()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # jit.script is deprecated in 2.14
            scripted = torch.jit.script(model)
        x = torch.randn(1, in_ch, 71, 90)
        with torch.no_grad():
            eager, script = model(x), scripted(x)
            for task in eager:
                torch.testing.assert_close(script[task], eager[task], rtol=1e-5, atol=1e-5)
            classes = scripted.to_classes(script)
            expected = model.to_classes(eager)
        for task in eager:
            assert torch.equal(classes[task], expected[task])

    def test_classes_and_probabilities(self, case: tuple[ModelConfig, int, MultiTaskModel]) -> None:
        cfg, in_ch, model = case
        model.eval()
        with torch.no_grad():
            out = model(torch.randn(2, in_ch, 33, 47))
        classes = model.to_classes(out)
        probs = model.to_probabilities(out)
        for task, n in EXPECTED_CHANNELS[cfg.sic_mode].items():
            assert classes[task].dtype == torch.int64 and classes[task].shape == (2, 33, 47)
            assert int(classes[task].min()) >= 0
            assert int(classes[task].max()) <= (10 if task == "SIC" else n - 1)
            if task == "SIC" and cfg.sic_mode == "regression":
                assert probs[task].shape == (2, 1, 33, 47)
                assert float(probs[task].min()) >= 0 and float(probs[task].max()) <= 10
            else:
                torch.testing.assert_close(probs[task].sum(1), torch.ones(2, 33, 47))
                assert torch.equal(probs[task].argmax(1), classes[task])

    def test_one_optimizer_step_lowers_the_loss(
        self, case: tuple[ModelConfig, int, MultiTaskModel]
    ) -> None:
        _, in_ch, built = case
        model = copy.deepcopy(built)
        model.train()
        g = torch.Generator().manual_seed(3)
        x = torch.randn(2, in_ch, 48, 48, generator=g)
        y = _targets(2, 48, 48, seed=4)
        opt = torch.optim.SGD(model.parameters(), lr=1e-2)
        # dropout off so the two losses compare the same function
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        loss = _loss(model, model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            after = _loss(model, model(x), y)
        assert torch.isfinite(loss) and torch.isfinite(after)
        assert float(after) < float(loss.detach())
        # timm zero-initialises the last BN of each residual block, so inner block
        # weights get no gradient on the first step; everything else must move.
        changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p)}
        must = {n for n in before if not n.startswith("encoder.layer")}
        assert must <= changed, sorted(must - changed)


def test_rate_sets_are_wired_into_the_aspp() -> None:
    cfg = _cfg({"aspp": {"rates": [24, 48, 72]}, "task_rates": {"SOD": [2, 4, 6]}})
    model = build_model(cfg, 3, seed=0)
    dil = {
        task: [model.decoders[task].aspp.branches[i][0].dilation[0] for i in range(1, 4)]
        for task in ("SIC", "SOD", "FLOE")
    }
    assert dil == {"SIC": [24, 48, 72], "SOD": [2, 4, 6], "FLOE": [24, 48, 72]}
    # padding equals dilation: a 3x3 atrous conv keeps the feature size
    assert model.decoders["SOD"].aspp.branches[2][0].padding == (4, 4)


def test_seeded_build_is_reproducible_and_leaves_global_rng_alone() -> None:
    cfg = _cfg({})
    torch.manual_seed(99)
    state = torch.random.get_rng_state()
    a = build_model(cfg, 3, seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)
    b = build_model(cfg, 3, seed=5)
    c = build_model(cfg, 3, seed=6)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["encoder.conv1.weight"], sc["encoder.conv1.weight"])


def test_layer_names_address_real_modules() -> None:
    model = build_model(_cfg({"aspp": {"rates": [12, 24, 36]}}), 3, seed=0)
    modules = dict(model.named_modules())
    names = model.layer_names()
    assert all(n in modules for n in names)
    assert names["decoders.SOD.aspp.branches.2"] == "SOD ASPP branch: rate 24"
    assert "decoders.SOD.project" in names and "heads.FLOE" in names
    assert isinstance(modules["decoders.SOD.project"][0], torch.nn.Conv2d)
    sod = model.layer_names("SOD")
    assert not any(".SIC." in n or n.endswith(".SIC") for n in sod)
    shared = build_model(_cfg({"shared_decoder": True}), 3, seed=0)
    assert "decoders.shared.project" in shared.layer_names("SOD")
    assert all(n in dict(shared.named_modules()) for n in shared.layer_names())


def test_sic_regression_uses_the_project_rounding_rule() -> None:
    from icecontext.evaluation import sic_to_classes

    model = build_model(_cfg({}), 3, seed=0)
    values = [-3.2, -0.5, -0.4, 0.49, 0.5, 1.5, 2.5, 0.49999997, 9.6, 10.4, 14.0, float("nan")]
    sic = torch.tensor(values).reshape(1, 1, 1, -1)
    n = sic.shape[-1]
    out = {"SIC": sic, "SOD": torch.zeros(1, 6, 1, n), "FLOE": torch.zeros(1, 7, 1, n)}
    classes = model.to_classes(out)["SIC"]
    # half away from zero, clipped to 0..10, NaN -> 255
    assert classes.flatten().tolist() == [0, 0, 0, 0, 1, 2, 3, 0, 10, 10, 10, 255]
    assert torch.equal(classes, sic_to_classes(sic[:, 0], rule="round"))
    g = torch.Generator().manual_seed(0)
    many = (torch.rand(1, 1, 50, 50, generator=g) * 14 - 2).mul(2).round().div(2)  # many halves
    got = model.to_classes({"SIC": many})["SIC"]
    assert torch.equal(got, sic_to_classes(many[:, 0], rule="round"))


@pytest.mark.parametrize("name", ["resnet101", "resnet152"])
def test_deep_encoders_build(name: str) -> None:
    """ResNet-101/152: build only (on the meta device: no memory, no init cost)."""
    from icecontext.models.backbones import build_encoder
    from icecontext.models.config import EncoderConfig

    with torch.device("meta"):
        enc = build_encoder(EncoderConfig(name=name, depth="layer4", output_stride=8), 7)
        y = enc(torch.empty(1, 7, 96, 80))
    assert enc.out_channels == 2048 and y.shape == (1, 2048, 12, 10)
    assert enc.conv1.weight.shape == (64, 7, 7, 7)


def test_torch_export_with_dynamic_height_and_width() -> None:
    """torch.export (the successor of TorchScript) traces the model once for any B, H, W."""
    model = build_model(_cfg({"aspp": {"rates": [2, 4, 6]}}), 3, seed=0).eval()
    b = torch.export.Dim("B", min=1, max=64)
    h, w = torch.export.Dim("H", min=32, max=4096), torch.export.Dim("W", min=32, max=4096)
    program = torch.export.export(
        model, (torch.randn(2, 3, 96, 112),), dynamic_shapes={"x": {0: b, 2: h, 3: w}}
    )
    x = torch.randn(3, 3, 97, 123)
    with torch.no_grad():
        exported, eager = program.module()(x), model(x)
    for task in eager:
        torch.testing.assert_close(exported[task], eager[task], rtol=1e-5, atol=1e-5)
