"""Each bad input gets its own named error before any work is done."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fl_leak
from fl_leak.errors import (
    GradientMismatchError,
    InputShapeError,
    InvalidGradientError,
    UnknownAttackError,
    UnsupportedLayerError,
)


def _gradients(model):
    return [torch.randn_like(p) for p in model.parameters()]


@pytest.mark.parametrize(
    "layer,name",
    [
        (nn.BatchNorm2d(4), "BatchNorm2d"),
        (nn.Upsample(scale_factor=2), "Upsample"),
        (nn.Dropout(0.5), "Dropout"),
    ],
)
def test_unsupported_layer_is_named_and_points_to_optimisation_attacks(layer, name):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), layer, nn.Tanh(), nn.Flatten(), nn.LazyLinear(10))
    model(torch.zeros(1, 3, 8, 8))
    with pytest.raises(UnsupportedLayerError, match=rf"'1' \({name}\).*attack='ig'"):
        fl_leak.reconstruct(model, _gradients(model), input_shape=(3, 8, 8), attack="linear")


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))

    def forward(self, x):
        return self.head(x + torch.tanh(self.conv(x)))


def test_residual_block_is_refused():
    model = Residual()
    with pytest.raises(UnsupportedLayerError, match="skip connections"):
        fl_leak.reconstruct(model, _gradients(model), input_shape=(3, 8, 8), attack="linear")


def test_gradient_count_mismatch():
    model = fl_leak.build_model("cnn2_c1")
    with pytest.raises(GradientMismatchError, match="got 2 gradient tensors for 3"):
        fl_leak.reconstruct(model, _gradients(model)[:2], attack="linear")


def test_gradient_shape_mismatch_names_the_parameter():
    model = fl_leak.build_model("cnn2_c1")
    gradients = _gradients(model)
    gradients[1] = gradients[1].T
    with pytest.raises(GradientMismatchError, match=r"parameter '3.weight' has shape \(5400, 10\)"):
        fl_leak.reconstruct(model, gradients, attack="linear")


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_gradients(value):
    model = fl_leak.build_model("cnn2_c1")
    gradients = _gradients(model)
    gradients[0][0, 0, 0, 0] = value
    with pytest.raises(InvalidGradientError, match=r"'0\.weight' holds 1 NaN/Inf"):
        fl_leak.reconstruct(model, gradients, attack="linear")


def test_input_shape_that_does_not_fit():
    model = fl_leak.build_model("cnn2_c1")
    with pytest.raises(InputShapeError, match=r"input_shape \(3, 28, 28\) does not fit"):
        fl_leak.reconstruct(model, _gradients(model), input_shape=(3, 28, 28), attack="linear")


def test_unknown_attack_lists_known_names():
    model = fl_leak.build_model("cnn2_c1")
    with pytest.raises(UnknownAttackError, match=r"known attacks: .*hybrid, .*linear"):
        fl_leak.reconstruct(model, _gradients(model), attack="magic")


def test_last_layer_without_bias_is_refused():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 5, bias=False))
    with pytest.raises(UnsupportedLayerError, match=r"nn\.Linear with bias"):
        fl_leak.reconstruct(model, _gradients(model), input_shape=(3, 2, 2), attack="linear")
