"""Batch normalisation in the linear attack and the audit: folded in evaluation mode, refused by
name in training mode."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fl_leak
from fl_leak.attacks import check_attack_model
from fl_leak.attacks.linear.chain import parse_chain
from fl_leak.errors import UnsupportedLayerError
from fl_leak.metrics.audit import audit
from tests.conftest import true_gradients


def _with_statistics(norm: nn.modules.batchnorm._BatchNorm, seed: int) -> None:
    """Random running statistics and affine parameters, as after some training."""
    generator = torch.Generator().manual_seed(seed)
    channels = norm.num_features
    norm.running_mean.copy_(torch.randn(channels, generator=generator) * 0.3)
    norm.running_var.copy_(torch.rand(channels, generator=generator) + 0.5)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(channels, generator=generator) + 0.5)
        norm.bias.copy_(torch.randn(channels, generator=generator) * 0.2)


def _network(conv_bias: bool = False) -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1, bias=conv_bias),
        nn.BatchNorm2d(6),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(6 * 5 * 5, 12),
        nn.BatchNorm1d(12),
        nn.Tanh(),
        nn.Linear(12, 4),
    ).double()
    _with_statistics(model[1], 1)
    _with_statistics(model[5], 2)
    return model.eval()


def _data():
    generator = torch.Generator().manual_seed(3)
    return torch.rand(1, 1, 5, 5, generator=generator, dtype=torch.float64), torch.tensor([1])


def _folded(model: nn.Sequential) -> nn.Sequential:
    """The same network with each BatchNorm folded by hand into the layer before it."""
    layers = []
    for index in (0, 4):
        layer, norm = model[index], model[index + 1]
        scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
        shape = (-1,) + (1,) * (layer.weight.dim() - 1)
        bias = layer.bias if layer.bias is not None else torch.zeros_like(scale)
        folded = type(layer)(*_sizes(layer)).double()
        with torch.no_grad():
            folded.weight.copy_(layer.weight * scale.reshape(shape))
            folded.bias.copy_((bias - norm.running_mean) * scale + norm.bias)
        layers.append(folded)
    return nn.Sequential(layers[0], nn.Tanh(), nn.Flatten(), layers[1], nn.Tanh(), model[7])


def _sizes(layer):
    if isinstance(layer, nn.Conv2d):
        return layer.in_channels, layer.out_channels, layer.kernel_size, 1, layer.padding
    return layer.in_features, layer.out_features


@pytest.mark.parametrize("conv_bias", [False, True])
def test_evaluation_mode_folds_into_the_weight_layer_with_its_gradients(conv_bias):
    model = _network(conv_bias)
    x, y = _data()
    folded = _folded(model)
    with torch.no_grad():
        assert torch.allclose(folded(x), model(x), atol=1e-12)
    chain = parse_chain(model, true_gradients(model, x, y), (1, 5, 5))
    expected = true_gradients(folded, x, y)  # autograd of the hand-folded network
    parameters = [p.detach() for p in folded.parameters()]
    for block, index in zip(chain.blocks, (0, 2, 4), strict=True):
        assert torch.allclose(block.operator.weight, parameters[index], atol=1e-14)
        assert torch.allclose(block.operator.bias, parameters[index + 1], atol=1e-14)
        assert torch.allclose(block.weight_gradient, expected[index], atol=1e-12)
        assert torch.allclose(block.bias_gradient, expected[index + 1], atol=1e-12)


def test_linear_attack_is_exact_through_evaluation_mode_batchnorm():
    model = _network()
    x, y = _data()
    rec = fl_leak.reconstruct(model, true_gradients(model, x, y), (1, 5, 5), attack="linear")
    assert (rec.inputs - x).norm() / x.norm() < 1e-8


def test_audit_of_evaluation_mode_batchnorm_is_that_of_the_folded_network():
    model = _network()
    x, y = _data()
    report = audit(model, (1, 5, 5), inputs=x, labels=y)
    reference = audit(_folded(model), (1, 5, 5), inputs=x, labels=y)
    assert [(r.rank, r.deficiency) for r in report.layers] == [
        (r.rank, r.deficiency) for r in reference.layers
    ]
    assert report.full_rank


def test_training_mode_is_refused_by_name_before_any_work():
    model = _network().train()
    for attack in ("linear", "hybrid"):
        with pytest.raises(
            UnsupportedLayerError, match=r"layer '1' \(BatchNorm2d\).*training mode"
        ):
            check_attack_model(attack, model, (1, 5, 5))
    with pytest.raises(UnsupportedLayerError, match=r"layer '1' \(BatchNorm2d\).*couple") as error:
        audit(model, (1, 5, 5))
    assert str(error.value).count("optimisation attacks") == 1  # the advice once, not repeated
    check_attack_model("ig", model, (1, 5, 5))  # the optimisation attacks take it


def test_batch_statistics_without_running_ones_are_refused():
    model = nn.Sequential(
        nn.Linear(4, 3), nn.BatchNorm1d(3, track_running_stats=False), nn.Linear(3, 2)
    ).eval()
    with pytest.raises(UnsupportedLayerError, match=r"layer '1' \(BatchNorm1d\)"):
        check_attack_model("linear", model, (4,))


def test_batchnorm_not_right_after_a_weight_layer_is_refused():
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.BatchNorm1d(3), nn.Linear(3, 2)).eval()
    with pytest.raises(UnsupportedLayerError, match=r"layer '2' \(BatchNorm1d\).*directly"):
        check_attack_model("linear", model, (4,))
