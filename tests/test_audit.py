"""The audit against an explicitly materialised matrix, and the paper's calibration values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fl_leak
from fl_leak.errors import FlLeakError
from fl_leak.metrics import psnr
from fl_leak.metrics.audit import audit, probe_layers, security_index
from fl_leak.models import build_model
from tests.conftest import true_gradients


def _materialised(system) -> np.ndarray:
    """The unscaled stacked matrix, built column by column from plain autograd (no adapters)."""
    operator, d = system.operator, system.output_gradient
    weight = operator.weight.detach().clone().requires_grad_(True)
    module_forward = operator.with_weight(weight).forward
    columns = []
    for column in torch.eye(system.num_unknowns, dtype=torch.float64):
        x = column.reshape(system.unknown_shape)
        forward = module_forward(x)
        (gradient,) = torch.autograd.grad((forward * d).sum(), [weight])
        columns.append(torch.cat([(forward * system.valid).reshape(-1), gradient.reshape(-1)]))
    return torch.stack(columns, dim=1).detach().numpy()


SMALL = [
    nn.Sequential(nn.Conv2d(2, 3, 3, bias=False), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 6 * 6, 5)),
    nn.Sequential(
        nn.Conv2d(2, 1, 3, stride=2, bias=False), nn.Sigmoid(), nn.Flatten(), nn.Linear(9, 4)
    ),
    nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),
        nn.LeakyReLU(0.2),
        nn.AvgPool2d(2),
        nn.Conv2d(4, 2, 3, stride=2, bias=False),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(2, 3),
    ),
    nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 8 * 8, 6)
    ),
]


@pytest.mark.parametrize("batch_size", [1, 2])
@pytest.mark.parametrize("index", range(len(SMALL)))
def test_deficiency_equals_rank_deficiency_of_materialised_matrix(index, batch_size):
    torch.manual_seed(index)
    model = SMALL[index].double()
    report = audit(model, input_shape=(2, 8, 8), batch_size=batch_size)
    systems = probe_layers(model, (2, 8, 8), batch_size).systems
    for layer, system in zip(report.layers[:-1], systems, strict=True):
        matrix = _materialised(system)
        expected = matrix.shape[1] - np.linalg.matrix_rank(matrix)
        assert layer.method == "svd"
        assert layer.deficiency == expected
        assert layer.deficiency >= system.deficiency_bound()  # the bound never overstates


def test_paper_calibration_values():
    # values printed by the paper's reference code
    expected = {"cnn2_c0": -2821, "cnn2_c2": -1470, "cnn3_c2": -1995}
    for name, index in expected.items():
        assert audit(build_model(name, seed=0)).index == index, name


def test_index_formula_weights_deficiency_toward_the_input():
    assert security_index([10, 10]) == -(10 + 5)
    assert security_index([0, 0, 0]) == 0
    assert security_index([]) == 0


def test_full_rank_network_has_index_zero_and_finite_condition():
    report = audit(build_model("cnn2_c1", seed=0))
    assert report.index == 0 and report.full_rank
    assert 1 <= report.layers[0].condition < 1e8
    assert "index (batch size 1, random probe): 0" in report.table()


def test_large_layers_fall_back_to_the_documented_bound():
    report = audit(build_model("cnn2_c0", seed=0), max_dense=10)
    assert report.layers[0].method == "bound"
    assert report.layers[0].deficiency == 3072 - (225 + 27 - 1)


def test_gradients_of_probe_layers_come_from_autograd():
    model = build_model("cnn2_c1", seed=0).double()
    systems = probe_layers(model, (3, 32, 32), 1).systems
    generator = torch.Generator().manual_seed(0)
    inputs = torch.rand(1, 3, 32, 32, generator=generator, dtype=torch.float64)
    labels = torch.randperm(10, generator=generator)[:1]
    (weight_grad, *_) = torch.autograd.grad(
        F.cross_entropy(model(inputs), labels), list(model.parameters())
    )
    assert torch.allclose(systems[0].observed_gradient, weight_grad)
    assert torch.allclose(
        systems[0].operator.gradient(inputs, systems[0].output_gradient), weight_grad
    )


def test_probe_at_given_inputs_and_labels():
    model = build_model("cnn2_c1", seed=0).double()
    inputs = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    labels = torch.tensor([4, 7])
    systems = probe_layers(model, (3, 32, 32), 2, inputs=inputs, labels=labels).systems
    (weight_grad, *_) = torch.autograd.grad(
        F.cross_entropy(model(inputs.double()), labels), list(model.parameters())
    )
    assert torch.allclose(systems[0].observed_gradient, weight_grad)
    report = audit(model, batch_size=2, max_dense=0, inputs=inputs, labels=labels)
    assert report.probe == "data" and "data probe" in report.table()


def test_probe_inputs_of_the_wrong_shape_are_refused():
    model = build_model("cnn2_c1", seed=0)
    with pytest.raises(ValueError, match="probe inputs of shape"):
        audit(model, batch_size=2, inputs=torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match="got 1 probe labels"):
        audit(model, batch_size=2, inputs=torch.rand(2, 3, 32, 32), labels=torch.tensor([1]))


def test_audit_on_the_cpu_device_is_the_default_audit():
    model = SMALL[1]
    default = audit(model, input_shape=(2, 8, 8), batch_size=2)
    on_cpu = audit(model, input_shape=(2, 8, 8), batch_size=2, device=torch.device("cpu"))
    assert [layer.as_dict() | {"seconds": 0} for layer in on_cpu.layers] == [
        layer.as_dict() | {"seconds": 0} for layer in default.layers
    ]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is available here")
def test_an_unavailable_device_is_refused_before_any_work(monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("probed before the device was checked")

    monkeypatch.setattr("fl_leak.metrics.audit.probe_layers", no_work)
    with pytest.raises(FlLeakError, match="device='cuda' is not available"):
        audit(SMALL[0], input_shape=(2, 8, 8), device="cuda")
    with pytest.raises(FlLeakError, match="device must be a torch device"):
        audit(SMALL[0], input_shape=(2, 8, 8), device="no_such_device")


def _noisy_attack_psnr(model, image, label, sigma):
    """Measured: the linear attack on true gradients plus Gaussian noise of ``sigma`` times each
    tensor's RMS (benchmarks/noise_vs_conditioning.py)."""
    gradients = true_gradients(model, image, label)
    generator = torch.Generator().manual_seed(0)
    noisy = [
        g
        + sigma * g.pow(2).mean().sqrt() * torch.randn(g.shape, generator=generator, dtype=g.dtype)
        for g in gradients
    ]
    result = fl_leak.reconstruct(model, noisy, attack="linear", input_shape=tuple(image.shape[1:]))
    return float(psnr(image, result.inputs.clamp(0, 1)))


def test_audit_predicts_the_noisy_attacks_psnr(embedded):
    """The audit's predicted PSNR under update noise against the attack measured at that noise."""
    model = build_model("cnn2_c5", input_shape=(3, 16, 16), num_classes=12, seed=0).double()
    images = embedded.images[:8, :, :16, :16].double() / 255
    image, label = images[:1], embedded.labels[:1]
    report = audit(model, (3, 16, 16), noise_levels=[1e-4, 1e-2], noise_images=images)
    assert list(report.noise_psnr) == [1e-4, 1e-2]
    assert "predicted PSNR under Gaussian update noise" in report.table()
    for sigma, predicted in report.noise_psnr.items():
        measured = _noisy_attack_psnr(model, image, label, sigma)
        assert abs(predicted - measured) < 6, f"sigma {sigma}: {predicted} vs {measured} dB"
    assert report.noise_psnr[1e-4] > report.noise_psnr[1e-2] + 20


def test_noise_prediction_settings_are_refused_before_any_work():
    model = SMALL[0]
    with pytest.raises(FlLeakError, match="for batch 1"):
        audit(
            model, (2, 8, 8), batch_size=2, noise_levels=[1e-3], noise_images=torch.rand(4, 2, 8, 8)
        )
    with pytest.raises(FlLeakError, match="needs images"):
        audit(model, (2, 8, 8), noise_levels=[1e-3])
    with pytest.raises(FlLeakError, match="positive and finite"):
        audit(model, (2, 8, 8), noise_levels=[0.0], noise_images=torch.rand(4, 2, 8, 8))
