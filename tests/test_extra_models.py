"""The extra networks: ResNet-style (beyond the linear attack's reach), max pooling, Flower's
quickstart."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fl_leak
from fl_leak.errors import UnsupportedLayerError
from fl_leak.metrics.audit import audit
from tests.conftest import true_gradients

EXTRA = ["resnet_small", "maxpool_cnn", "flower_cnn"]


@pytest.mark.parametrize("name", EXTRA)
def test_registered_and_shaped(name):
    model = fl_leak.build_model(name, input_shape=(3, 32, 32), num_classes=12, seed=0)
    assert name in fl_leak.list_models()
    assert model(torch.rand(4, 3, 32, 32)).shape == (4, 12)


@pytest.mark.parametrize("name", EXTRA)
def test_seed_makes_weights_reproducible(name):
    first = fl_leak.build_model(name, seed=3).state_dict()
    second = fl_leak.build_model(name, seed=3).state_dict()
    other = fl_leak.build_model(name, seed=4).state_dict()
    assert all(torch.equal(first[key], second[key]) for key in first)
    assert not all(torch.equal(first[key], other[key]) for key in first)


def test_flower_cnn_is_the_quickstart_network():
    model = fl_leak.build_model("flower_cnn", seed=0)
    shapes = [tuple(p.shape) for p in model.parameters()]
    assert shapes == [
        (6, 3, 5, 5), (6,), (16, 6, 5, 5), (16,),
        (120, 400), (120,), (84, 120), (84,), (10, 84), (10,),
    ]  # fmt: skip
    assert sum(p.numel() for p in model.parameters()) == 62_006
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 2


def test_resnet_small_has_batchnorm_and_residual_blocks():
    model = fl_leak.build_model("resnet_small", seed=0)
    norms = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert norms == 1 + 3 * 2 + 2  # stem, two per block, two projection shortcuts
    assert len(model.blocks) == 3
    block = model.blocks[0]
    x = torch.rand(2, 16, 8, 8)
    with torch.no_grad():  # the identity shortcut adds the block's input back
        assert torch.allclose(
            block(x), torch.relu(block.bn2(block.conv2(torch.relu(block.bn1(block.conv1(x))))) + x)
        )


def test_flower_cnn_adapts_to_grey_28x28_inputs():
    model = fl_leak.build_model("flower_cnn", input_shape=(1, 28, 28), seed=0)
    assert model[7].in_features == 16 * 4 * 4
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_linear_attack_and_audit_refuse_resnet_small_by_name():
    model = fl_leak.build_model("resnet_small", seed=0)  # BatchNorm in training mode
    x, y = torch.rand(1, 3, 32, 32), torch.tensor([1])
    with pytest.raises(UnsupportedLayerError, match=r"\(BatchNorm2d\).*attack='ig'"):
        fl_leak.reconstruct(model, true_gradients(model, x, y), attack="linear")
    with pytest.raises(UnsupportedLayerError, match="BatchNorm2d"):
        audit(model)


def test_resnet_small_in_evaluation_mode_is_refused_for_its_skip_connections():
    model = fl_leak.build_model("resnet_small", seed=0).eval()
    with pytest.raises(
        UnsupportedLayerError, match=r"layer .blocks.1.shortcut.0. \(Conv2d\).*skip connections"
    ):
        audit(model)
