"""The networks studied by Chen & Campbell (BMVC 2022), plus R-GAP's CNN6, as layer specs.

Each network is a chain of bias-free convolutions (``lenet`` has conv biases), a flatten and one
Linear layer with bias; every layer, the last Linear included, is followed by its activation.
A convolution is written ``(out_channels, kernel, stride, padding)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from fl_leak.models.builder import build_from_specs
from fl_leak.models.registry import ModelFactory, register_model

Conv = tuple[int, int, int, int]

LEAKY_02: dict[str, Any] = {"name": "leaky_relu", "negative_slope": 0.2}


@dataclass(frozen=True)
class FamilyNet:
    """A network of the paper's family: its convolutions and one activation per weight layer."""

    convs: tuple[Conv, ...]
    activations: tuple[str | dict[str, Any], ...]
    conv_bias: bool = False

    def specs(self, num_classes: int = 10) -> list[dict[str, Any]]:
        """The layer specs of this network, for ``build_from_specs``."""
        if len(self.activations) != len(self.convs) + 1:
            raise ValueError("a family network needs one activation per conv plus one for the FC")
        specs: list[dict[str, Any]] = []
        for (out, kernel, stride, padding), act in zip(self.convs, self.activations, strict=False):
            specs.append(
                {
                    "type": "conv",
                    "out_channels": out,
                    "kernel_size": kernel,
                    "stride": stride,
                    "padding": padding,
                    "bias": self.conv_bias,
                }
            )
            specs.append(_act(act))
        specs.append({"type": "flatten"})
        specs.append({"type": "linear", "out_features": num_classes})
        specs.append(_act(self.activations[-1]))
        return specs


def _act(act: str | dict[str, Any]) -> dict[str, Any]:
    return {"type": "act", "name": act} if isinstance(act, str) else {"type": "act", **act}


_C1 = ((6, 3, 1, 0), (3, 4, 2, 0))  # cnn3_c1 and its activation variants
_C2 = ((6, 4, 2, 0), (3, 3, 2, 0))
_C3 = ((6, 3, 1, 0), (9, 3, 1, 0))
_C4 = ((1, 3, 1, 0), (6, 3, 1, 0))
_LENET = ((12, 5, 2, 2), (12, 5, 2, 2), (12, 5, 1, 2))
_CNN6 = ((12, 4, 2, 2), (20, 3, 2, 1), (36, 3, 1, 1), (36, 3, 1, 1), (64, 3, 2, 1), (128, 3, 1, 1))
_RGAP6 = ((12, 4, 2, 2), (36, 3, 2, 1), (36, 3, 1, 1), (36, 3, 1, 1), (64, 3, 2, 1), (128, 3, 1, 1))

FAMILY: dict[str, FamilyNet] = {
    "cnn2_c0": FamilyNet(((1, 3, 2, 0),), ("tanh", "tanh")),
    "cnn2_c1": FamilyNet(((6, 3, 1, 0),), ("tanh", "identity")),
    "cnn2_c11": FamilyNet(((6, 3, 1, 0),), ("leaky_relu", "sigmoid")),
    "cnn2_c2": FamilyNet(((6, 4, 2, 0),), ("tanh", "identity")),
    "cnn2_c21": FamilyNet(((6, 4, 2, 0),), ("leaky_relu", "sigmoid")),
    "cnn2_c4": FamilyNet(((1, 3, 1, 0),), ("tanh", "tanh")),
    "cnn2_c41": FamilyNet(((1, 3, 1, 0),), ("leaky_relu", "sigmoid")),
    "cnn2_c5": FamilyNet(((3, 3, 1, 1),), ("tanh", "tanh")),
    "cnn2_c6": FamilyNet(((12, 5, 2, 0),), ("tanh", "identity")),
    "cnn3_c1": FamilyNet(_C1, ("tanh", "tanh", "identity")),
    "cnn3_c6": FamilyNet(_C1, ("leaky_relu", "leaky_relu", "tanh")),
    "cnn3_c7": FamilyNet(_C1, ("tanh", "leaky_relu", "tanh")),
    "cnn3_c11": FamilyNet(_C1, ("leaky_relu", "leaky_relu", "sigmoid")),
    "cnn3_c12": FamilyNet(_C1, ("softplus", "softplus", "sigmoid")),
    "cnn3_c13": FamilyNet(_C1, ("tanh", "tanh", "sigmoid")),
    "cnn3_c14": FamilyNet(_C1, ("identity", "identity", "sigmoid")),
    "cnn3_c15": FamilyNet(_C1, ("identity", "identity", "tanh")),
    "cnn3_c8": FamilyNet(((9, 3, 1, 0), (3, 4, 2, 0)), ("tanh", "tanh", "tanh")),
    "cnn3_c2": FamilyNet(_C2, ("tanh", "tanh", "identity")),
    "cnn3_c21": FamilyNet(_C2, ("leaky_relu", "leaky_relu", "sigmoid")),
    "cnn3_c22": FamilyNet(_C2, ("softplus", "softplus", "sigmoid")),
    "cnn3_c3": FamilyNet(_C3, ("tanh", "tanh", "identity")),
    "cnn3_c31": FamilyNet(_C3, ("leaky_relu", "leaky_relu", "sigmoid")),
    "cnn3_c32": FamilyNet(_C3, ("softplus", "softplus", "sigmoid")),
    "cnn3_c9": FamilyNet(((5, 3, 1, 0), (7, 3, 1, 0)), ("tanh", "tanh", "tanh")),
    "cnn3_c4": FamilyNet(_C4, ("tanh", "tanh", "identity")),
    "cnn3_c41": FamilyNet(_C4, ("leaky_relu", "leaky_relu", "sigmoid")),
    "cnn3_c42": FamilyNet(_C4, ("softplus", "softplus", "sigmoid")),
    "cnn3_c5": FamilyNet(((12, 5, 1, 1), (12, 5, 2, 2)), ("tanh", "tanh", "identity")),
    "cnn4_c1": FamilyNet(
        ((6, 3, 1, 0), (5, 4, 2, 0), (3, 4, 1, 0)), ("tanh", "tanh", "tanh", "identity")
    ),
    "cnn4_c2": FamilyNet(
        ((16, 5, 1, 0), (6, 5, 2, 0), (32, 5, 1, 2)), ("tanh", "tanh", "tanh", "identity")
    ),
    "cnn4_c3": FamilyNet(
        ((6, 5, 1, 0), (16, 5, 2, 0), (16, 5, 1, 2)), ("tanh", "tanh", "tanh", "identity")
    ),
    "lenet": FamilyNet(
        _LENET, ("leaky_relu", "leaky_relu", "leaky_relu", "identity"), conv_bias=True
    ),
    "lenet2": FamilyNet(
        ((12, 3, 2, 1), (12, 5, 2, 2), (12, 5, 1, 2)), ("tanh", "tanh", "tanh", "identity")
    ),
    "cnn6d": FamilyNet(_CNN6, (LEAKY_02,) * 6 + ("identity",)),
    # ReLU variants (beyond the paper): the derivative is known from the reconstructed output,
    # forward constraints hold on active units only
    "lenet_relu": FamilyNet(_LENET, ("relu", "relu", "relu", "identity"), conv_bias=True),
    "cnn2_relu": FamilyNet(((12, 3, 1, 1),), ("relu", "identity")),
    "rgap_cnn6": FamilyNet(_RGAP6, (LEAKY_02,) * 6 + ("identity",)),
}


def _factory(net: FamilyNet) -> ModelFactory:
    def build(input_shape: Sequence[int], num_classes: int) -> nn.Module:
        return build_from_specs(net.specs(num_classes), input_shape)

    return build


for _name, _net in FAMILY.items():
    register_model(_name)(_factory(_net))
