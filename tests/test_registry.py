"""The one registry behind every plug-in kind, and a layer type added from outside the package."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import fl_leak
from fl_leak.attacks import ATTACKS, list_attacks
from fl_leak.attacks.linear.activations import ACTIVATIONS
from fl_leak.attacks.linear.layers import (
    WEIGHT_LAYERS,
    Shape,
    WeightOperator,
    register_weight_layer,
    supported_layer_names,
)
from fl_leak.data import list_datasets
from fl_leak.data.registry import DATASETS
from fl_leak.defenses import DEFENSES, list_defenses
from fl_leak.errors import (
    DuplicateNameError,
    FlLeakError,
    UnknownAttackError,
    UnknownDatasetError,
    UnknownDefenseError,
    UnknownModelError,
    UnknownNameError,
    UnsupportedLayerError,
)
from fl_leak.models import build_from_specs, list_models
from fl_leak.models.builder import LAYER_SPECS, register_layer_spec
from fl_leak.models.registry import MODELS
from fl_leak.registry import Registry


def test_registry_lists_names_and_refuses_duplicates():
    registry = Registry[str, int]("colour")
    registry.register("red")(1)
    registry.add("blue", 2)

    assert registry.names() == ["blue", "red"]
    assert "red" in registry and "green" not in registry
    assert registry.get("blue") == 2 and registry.find("green") is None
    with pytest.raises(DuplicateNameError, match="a colour named 'red' is already registered"):
        registry.add("red", 3)
    assert registry.get("red") == 1


def test_unknown_name_error_lists_the_known_names():
    registry = Registry[str, int]("data set", plural="data sets")
    registry.add("mnist", 1)
    registry.add("cifar10", 2)

    with pytest.raises(UnknownNameError) as caught:
        registry.get("imagenet")

    assert str(caught.value) == "unknown data set 'imagenet'; known data sets: cifar10, mnist"
    assert isinstance(caught.value, FlLeakError) and isinstance(caught.value, KeyError)


def test_registry_keyed_by_type_has_display_names():
    registry = Registry[type[nn.Module], str]("layer type")
    registry.add(nn.Conv2d, "a")
    registry.add(nn.LeakyReLU, "b", name="leaky_relu")

    assert registry.names() == ["conv2d", "leaky_relu"]
    assert registry.name_of(nn.Conv2d) == "conv2d"
    assert registry.key_named("leaky_relu") is nn.LeakyReLU
    with pytest.raises(DuplicateNameError):
        registry.add(nn.Tanh, "c", name="conv2d")  # a name is unique too
    with pytest.raises(UnknownNameError, match="unknown layer type 'tanh'"):
        registry.get(nn.Tanh)


@pytest.mark.parametrize(
    ("registry", "public_names", "error"),
    [
        (MODELS, list_models, UnknownModelError),
        (ATTACKS, list_attacks, UnknownAttackError),
        (DEFENSES, list_defenses, UnknownDefenseError),
        (DATASETS, list_datasets, UnknownDatasetError),
    ],
    ids=["models", "attacks", "defenses", "data sets"],
)
def test_every_named_plug_in_kind_is_one_registry(registry, public_names, error):
    assert isinstance(registry, Registry)
    assert public_names() == registry.names()
    assert registry.error is error
    with pytest.raises(error, match=r"; known .*: "):
        registry.get("no-such-name")


def test_activation_names_come_from_one_table():
    assert ACTIVATIONS.names() == [
        "identity",
        "leaky_relu",
        "relu",
        "sigmoid",
        "softplus",
        "tanh",
    ]
    net = build_from_specs([{"type": "act", "name": "leaky_relu", "negative_slope": 0.3}], (4,))
    assert isinstance(net[0], nn.LeakyReLU) and net[0].negative_slope == 0.3


# A layer type defined and registered here, outside the package: a per-channel scale
# ``z[b, c] = w[c] x[b, c] + bias[c]``. Nothing else in fl_leak is edited for it.


class ChannelScale(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.rand(channels) + 0.5)
        self.bias = nn.Parameter(torch.randn(channels) * 0.1)

    def forward(self, x: Tensor) -> Tensor:
        shape = (-1, *([1] * (x.dim() - 2)))
        return x * self.weight.reshape(shape) + self.bias.reshape(shape)


class ChannelScaleOperator(WeightOperator):
    def _scale(self, like: Tensor, values: Tensor) -> Tensor:
        return values.reshape(-1, *([1] * (like.dim() - 2)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self._scale(x, self.weight)

    def forward_adjoint(self, z: Tensor) -> Tensor:
        return z * self._scale(z, self.weight)

    def gradient(self, x: Tensor, d: Tensor) -> Tensor:
        return (x * d).sum(dim=[0, *range(2, x.dim())])

    def gradient_adjoint(self, g: Tensor, d: Tensor) -> Tensor:
        return d * self._scale(d, g)

    def padding_entries(self) -> int:
        return 7  # not a real padding: only to see the audit ask the adapter


def _channel_scale(
    module: nn.Module, in_shape: Shape, weight: Tensor, bias: Tensor | None
) -> WeightOperator:
    return ChannelScaleOperator(in_shape, in_shape, weight, bias)


def _channel_scale_spec(options: dict, shape: tuple[int, ...]) -> nn.Module:
    return ChannelScale(shape[0], **options)


@pytest.fixture
def channel_scale(monkeypatch: pytest.MonkeyPatch):
    """Register the toy layer type for one test, leaving the registries as they were after it."""
    monkeypatch.setattr(WEIGHT_LAYERS, "_entries", dict(WEIGHT_LAYERS._entries))
    monkeypatch.setattr(LAYER_SPECS, "_entries", dict(LAYER_SPECS._entries))
    register_weight_layer(ChannelScale, "scale")(_channel_scale)
    register_layer_spec("scale")(_channel_scale_spec)


def _toy_model() -> nn.Sequential:
    torch.manual_seed(0)
    return build_from_specs(
        [
            {"type": "scale"},
            {"type": "act", "name": "tanh"},
            {"type": "flatten"},
            {"type": "linear", "out_features": 5},
        ],
        input_shape=(2, 4, 4),
    ).double()


def test_toy_operator_matches_autograd(channel_scale):
    torch.manual_seed(1)
    module = ChannelScale(3).double()
    x, d = (
        torch.randn(2, 3, 4, 4, dtype=torch.float64),
        torch.randn(2, 3, 4, 4, dtype=torch.float64),
    )
    operator = _channel_scale(module, (3, 4, 4), module.weight.detach(), module.bias.detach())

    (weight_grad,) = torch.autograd.grad((module(x) * d).sum(), [module.weight])

    assert torch.allclose(operator.add_bias(operator.forward(x)), module(x))
    assert torch.allclose(operator.gradient(x, d), weight_grad)
    g = torch.randn(3, dtype=torch.float64)
    assert torch.isclose(
        (operator.gradient(x, d) * g).sum(), (x * operator.gradient_adjoint(g, d)).sum()
    )
    assert torch.isclose((operator.forward(x) * d).sum(), (x * operator.forward_adjoint(d)).sum())


def test_a_registered_layer_type_is_used_by_the_attack_and_the_audit(channel_scale):
    model = _toy_model()
    x = torch.rand(1, 2, 4, 4, dtype=torch.float64)
    loss = F.cross_entropy(model(x), torch.tensor([3]))
    gradients = torch.autograd.grad(loss, list(model.parameters()))

    rec = fl_leak.reconstruct(model, gradients, input_shape=(2, 4, 4), attack="linear")
    report = fl_leak.audit(model, input_shape=(2, 4, 4))

    assert "ChannelScale" in supported_layer_names()
    assert [layer.kind for layer in rec.layers] == ["scale", "linear"]
    assert torch.allclose(rec.inputs, x, atol=1e-8)
    assert rec.labels.tolist() == [3]
    first = report.layers[0]
    assert (first.kind, first.unknowns, first.deficiency, first.padding) == ("scale", 32, 0, 7)
    assert report.index == 0


def test_an_unregistered_layer_type_is_refused_naming_the_registered_ones():
    model = nn.Sequential(ChannelScale(2), nn.Tanh(), nn.Flatten(), nn.Linear(32, 5))
    gradients = [torch.zeros_like(p) for p in model.parameters()]

    with pytest.raises(UnsupportedLayerError, match=r"'0' \(ChannelScale\).*Conv2d.*Linear"):
        fl_leak.reconstruct(model, gradients, input_shape=(2, 4, 4), attack="linear")
