"""The linear and hybrid attacks on the paper's networks, with real autograd gradients."""

from __future__ import annotations

import pytest
import torch

import fl_leak
from fl_leak.metrics import psnr
from fl_leak.metrics.audit import audit
from fl_leak.models.family import FAMILY
from tests.conftest import true_gradients

# Networks whose audit is full rank at batch 1 (checked by test_full_rank_networks_audit_full_rank)
FULL_RANK_FAST = ["cnn2_c1", "cnn2_c5", "cnn2_c11", "lenet", "lenet2"]
DEFICIENT = ["cnn2_c0", "cnn3_c1"]
IMAGES = [0, 200]


def _attack(name, embedded, index, attack, **options):
    model = fl_leak.build_model(name, seed=0)
    x, y = embedded[index]
    x, y = x[None], torch.tensor([y])
    reconstruction = fl_leak.reconstruct(
        model, true_gradients(model, x, y), attack=attack, **options
    )
    return x, y, reconstruction, float(psnr(reconstruction.inputs.float().clamp(0, 1), x))


@pytest.mark.parametrize("name", FULL_RANK_FAST)
@pytest.mark.parametrize("index", IMAGES)
def test_linear_recovers_full_rank_networks_exactly(name, index, embedded):
    x, y, reconstruction, score = _attack(name, embedded, index, "linear")
    assert score >= 60, f"{name}: {score:.1f} dB"
    assert reconstruction.labels.tolist() == y.tolist()
    assert reconstruction.labels_recovered
    assert reconstruction.inputs.shape == x.shape
    assert all(layer.deficiency_bound == 0 for layer in reconstruction.layers)


@pytest.mark.slow
@pytest.mark.parametrize("name", FULL_RANK_FAST)
def test_full_rank_networks_audit_full_rank(name):
    assert audit(fl_leak.build_model(name, seed=0)).full_rank


@pytest.mark.slow
def test_every_full_rank_network_of_the_family_is_recovered(embedded):
    """Full rank as audited at the image attacked: a ReLU layer's rank is that of the data's
    active set (cnn2_relu is full rank at the random probe, deficient at image 0)."""
    x, y = embedded[0]
    for name in FAMILY:
        model = fl_leak.build_model(name, seed=0)
        if not audit(model, inputs=x[None], labels=torch.tensor([y])).full_rank:
            continue
        _, _, _, score = _attack(name, embedded, 0, "linear")
        assert score >= 60, f"{name}: {score:.1f} dB"


def test_the_audit_at_the_image_predicts_exact_recovery_on_two_networks(embedded):
    """The family check in small: one network the audit calls full rank at the image attacked,
    recovered exactly, and one it calls deficient, not recovered (the slow test runs them all)."""
    x, y = embedded[0]
    verdicts = {}
    for name in ("cnn2_c5", "cnn2_c0"):
        model = fl_leak.build_model(name, seed=0)
        verdicts[name] = audit(model, inputs=x[None], labels=torch.tensor([y])).full_rank
        _, _, _, score = _attack(name, embedded, 0, "linear")
        assert (score >= 60) == verdicts[name], f"{name}: {score:.1f} dB"
    assert verdicts == {"cnn2_c5": True, "cnn2_c0": False}


@pytest.mark.parametrize("name", DEFICIENT)
def test_hybrid_improves_on_rank_deficient_networks(name, embedded):
    for index in IMAGES:
        _, _, linear, linear_score = _attack(name, embedded, index, "linear")
        _, _, hybrid, hybrid_score = _attack(name, embedded, index, "hybrid", iterations=300)
        assert any(layer.deficiency_bound > 0 for layer in linear.layers)
        assert hybrid.layers[0].corrected
        assert hybrid_score > linear_score + 1, f"{name}/{index}: {linear_score} -> {hybrid_score}"


@pytest.mark.parametrize("name", ["cnn2_c5", "lenet"])
def test_hybrid_leaves_exact_solutions_alone(name, embedded):
    _, _, linear, _ = _attack(name, embedded, 0, "linear")
    _, _, hybrid, _ = _attack(name, embedded, 0, "hybrid")
    assert not hybrid.layers[0].corrected
    assert torch.equal(hybrid.inputs, linear.inputs)


def test_given_labels_are_used_as_given(embedded):
    _, _, reconstruction, _ = _attack("cnn2_c1", embedded, 0, "linear", labels=torch.tensor([7]))
    assert reconstruction.labels.tolist() == [7]
    assert not reconstruction.labels_recovered


def test_layer_diagnostics_are_complete(embedded):
    _, _, reconstruction, _ = _attack("cnn3_c1", embedded, 0, "linear")
    first, middle, last = reconstruction.layers
    assert (first.unknowns, first.forward_equations, first.gradient_equations) == (3072, 5400, 162)
    assert (middle.unknowns, middle.forward_equations, middle.gradient_equations) == (
        5400,
        588,
        288,
    )
    assert middle.deficiency_bound == 5400 - (588 + 288 - 3)
    assert last.stop_reason == "closed form"
    assert all(
        layer.seconds >= 0 and layer.residual == layer.residual for layer in reconstruction.layers
    )
