"""Batches larger than one, labels recovered from the gradients, ReLU networks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import fl_leak
from fl_leak.attacks.labels import estimate_label_counts, labels_from_counts, round_counts
from fl_leak.attacks.linear.chain import parse_chain
from fl_leak.attacks.linear.last_layer import solve_last_layer
from fl_leak.attacks.linear.walk import last_layer_of
from fl_leak.metrics import score_batch
from fl_leak.models.builder import build_from_specs
from tests.conftest import true_gradients

TINY = (3, 8, 8)


def _batch(embedded, size: int, seed: int = 0):
    index = torch.randperm(len(embedded), generator=torch.Generator().manual_seed(seed))[:size]
    return embedded.images[index].float() / 255, embedded.labels[index]


@pytest.mark.parametrize(
    "name,size",
    [
        ("cnn2_c1", 2),
        ("cnn2_c1", 4),
        ("cnn2_c11", 2),
        pytest.param("cnn2_c11", 4, marks=pytest.mark.slow),
    ],
)
def test_linear_recovers_batches_with_labels_recovered(name, size, embedded):
    model = fl_leak.build_model(name, seed=0, num_classes=12)
    images, labels = _batch(embedded, size)
    reconstruction = fl_leak.reconstruct(
        model, true_gradients(model, images, labels), batch_size=size, attack="linear"
    )
    assert reconstruction.labels_recovered
    assert torch.equal(reconstruction.labels, torch.sort(labels).values)
    scores = score_batch(images, reconstruction.inputs.float().clamp(0, 1))
    assert float(scores.psnr.min()) >= 60, scores.psnr


def _distinct_class_batch(embedded, size: int, seed: int = 0):
    """One image of each of ``size`` distinct classes."""
    generator = torch.Generator().manual_seed(seed)
    classes = torch.randperm(int(embedded.labels.max()) + 1, generator=generator)[:size]
    index = [int(torch.nonzero(embedded.labels == c).flatten()[0]) for c in classes]
    return embedded.images[index].float() / 255, embedded.labels[index]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cnn2_c1", "cnn3_c3"])
def test_linear_recovers_batches_of_eight_the_audit_calls_full_rank(name, embedded):
    model = fl_leak.build_model(name, seed=0, num_classes=12)
    images, labels = _distinct_class_batch(embedded, 8)
    assert fl_leak.audit(model, batch_size=8, inputs=images, labels=labels).full_rank
    reconstruction = fl_leak.reconstruct(
        model, true_gradients(model, images, labels), batch_size=8, attack="linear"
    )
    assert torch.equal(reconstruction.labels, torch.sort(labels).values)
    assert float(score_batch(images, reconstruction.inputs.clamp(0, 1)).psnr.min()) >= 60


def _tiny_network(activation: str, channels: int, seed: int = 0) -> torch.nn.Module:
    """conv 3->channels k3 p1, activation, linear to 12 classes, on 3x8x8 inputs."""
    torch.manual_seed(seed)
    specs = [
        {"type": "conv", "out_channels": channels, "kernel_size": 3, "padding": 1},
        {"type": "act", "name": activation},
        {"type": "flatten"},
        {"type": "linear", "out_features": 12},
    ]
    return build_from_specs(specs, TINY)


def _shrunk(images: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(images, 4)  # 32x32 -> 8x8, still natural images


def test_a_batch_of_eight_the_audit_calls_full_rank_is_recovered_small_case(embedded):
    """Batches of eight in small: 8x8 images of 8 distinct classes on a tiny tanh network."""
    model = _tiny_network("tanh", 4)
    images, labels = _distinct_class_batch(embedded, 8)
    images = _shrunk(images)

    report = fl_leak.audit(model, TINY, batch_size=8, inputs=images, labels=labels)
    reconstruction = fl_leak.reconstruct(
        model, true_gradients(model, images, labels), TINY, batch_size=8, attack="linear"
    )

    assert report.full_rank
    assert torch.equal(reconstruction.labels, torch.sort(labels).values)
    assert float(score_batch(images, reconstruction.inputs.clamp(0, 1)).psnr.min()) >= 60


def test_a_relu_network_full_rank_at_the_data_is_recovered_small_case(embedded):
    """The positive ReLU case in small: a tiny ReLU network the audit calls full rank at the
    image attacked, whose inactive units give no forward rows, is recovered exactly."""
    model = _tiny_network("relu", 12)
    images, labels = _batch(embedded, 1)
    images = _shrunk(images)

    report = fl_leak.audit(model, TINY, batch_size=1, inputs=images, labels=labels)
    reconstruction = fl_leak.reconstruct(
        model, true_gradients(model, images, labels), TINY, attack="linear"
    )

    assert report.full_rank
    assert reconstruction.layers[0].forward_equations < 12 * 8 * 8
    assert not reconstruction.notes
    assert float(score_batch(images, reconstruction.inputs.clamp(0, 1)).psnr.min()) >= 60


@pytest.mark.slow
def test_a_batch_the_audit_does_not_call_full_rank_loses_digits_to_float32(embedded):
    # labels [1, 2, 8, 3, 9, 4, 7, 3]: the two samples of class 3 have nearly the same output
    # gradient on an untrained network (last layer's s_8 / s_1 ~ 1e-4), and one leaky-ReLU output
    # lies within 1e-7 of the kink: exact from a float64 update, some 60 dB lost from a float32 one
    model = fl_leak.build_model("cnn2_c11", seed=0, num_classes=12)
    images, labels = _batch(embedded, 8, seed=1)
    report = fl_leak.audit(model, batch_size=8, inputs=images, labels=labels)
    assert report.layers[-1].condition > 1e3 and not report.full_rank
    scores = {}
    for dtype in (torch.float32, torch.float64):
        typed = model.to(dtype)
        gradients = true_gradients(typed, images.to(dtype), labels)
        reconstruction = fl_leak.reconstruct(typed, gradients, batch_size=8, attack="linear")
        recovered = reconstruction.inputs.float().clamp(0, 1)
        scores[dtype] = float(score_batch(images, recovered).psnr.min())
    assert scores[torch.float64] >= 100
    assert scores[torch.float32] < scores[torch.float64] - 40, scores


def test_last_layer_rows_from_the_row_space_with_labels_given(embedded):
    model = fl_leak.build_model("lenet", seed=0, num_classes=12).double()
    images, labels = _batch(embedded, 6)
    images = images.double()
    chain = parse_chain(model, true_gradients(model, images, labels), (3, 32, 32))
    solution = solve_last_layer(last_layer_of(chain), torch.sort(labels).values)
    features = model[:-2](images).detach()  # the last Linear's inputs
    distances = torch.cdist(features, solution.inputs) / features.norm(dim=1, keepdim=True)
    assert solution.rank == 6 and solution.residual < 1e-8
    assert float(distances.min(dim=1).values.max()) < 1e-8  # every true row is recovered


@pytest.mark.parametrize("factor", [0.5, 3.0])
def test_the_scale_of_a_clipped_batch_update_is_fitted(factor, embedded):
    """Clipping to a norm scales the update by a factor the server does not see: with the scale
    fixed the batch's last layer has no exact fit; with it free the fit recovers the scale and the
    true inputs (the rows of the last Linear's input)."""
    model = fl_leak.build_model("cnn2_c5", seed=0, num_classes=12).double()
    images, labels = _distinct_class_batch(embedded, 4)
    images = images.double()
    gradients = [factor * g for g in true_gradients(model, images, labels)]
    layer = last_layer_of(parse_chain(model, gradients, (3, 32, 32)))
    fixed = solve_last_layer(layer, torch.sort(labels).values)
    free = solve_last_layer(layer, torch.sort(labels).values, free_scale=True)
    assert fixed.residual > 1e-3 and fixed.scale == 1.0
    assert free.residual < 1e-8
    assert free.scale == pytest.approx(factor, rel=1e-6)
    features = model[:-2](images).detach()  # the last Linear's inputs
    distances = torch.cdist(features, free.inputs) / features.norm(dim=1, keepdim=True)
    assert float(distances.min(dim=1).values.max()) < 1e-6


def test_a_scale_is_not_taken_where_it_does_not_make_the_update_consistent(embedded):
    """A sparsified update (each tensor's largest tenth kept) fits better with a smaller scale
    but not exactly: the scale stays 1 and the fit is the one with the scale fixed."""
    model = fl_leak.build_model("cnn2_c5", seed=0, num_classes=12).double()
    images, labels = _distinct_class_batch(embedded, 4)
    sparse = []
    for gradient in true_gradients(model, images.double(), labels):
        threshold = gradient.abs().flatten().kthvalue(int(0.9 * gradient.numel())).values
        sparse.append(torch.where(gradient.abs() > threshold, gradient, 0.0))
    layer = last_layer_of(parse_chain(model, sparse, (3, 32, 32)))
    order = torch.sort(labels).values
    fixed = solve_last_layer(layer, order)
    free = solve_last_layer(layer, order, free_scale=True)
    assert fixed.residual > 1e-3
    assert free.scale == 1.0 and free.residual == fixed.residual
    assert torch.equal(free.inputs, fixed.inputs)


def test_a_clipped_batch_update_is_recovered_exactly(embedded):
    """Through the whole attack, labels recovered: the update of 4 images at half its size (a
    clip to half the norm) is recovered exactly by default and not with the scale fixed."""
    model = fl_leak.build_model("cnn2_c5", seed=0, num_classes=12)
    images, labels = _distinct_class_batch(embedded, 4)
    gradients = [0.5 * g for g in true_gradients(model, images, labels)]
    scores = {}
    for free_scale in (True, False):
        reconstruction = fl_leak.reconstruct(
            model, gradients, batch_size=4, attack="linear", free_scale=free_scale
        )
        assert torch.equal(reconstruction.labels, torch.sort(labels).values)
        inputs = reconstruction.inputs.float().clamp(0, 1)
        scores[free_scale] = score_batch(images, inputs).psnr
    assert float(scores[True].min()) >= 60, scores[True]
    assert float(scores[False].max()) < 30, scores[False]


def test_labels_shared_in_a_clipped_batch_update_are_recovered(embedded):
    """8 images, label 0 twice, the update at a fifth of its size: the counts estimated from the
    scaled bias gradient are off, and the scaled fit proposes the right ones (with the scale
    fixed the labels stay wrong)."""
    model = fl_leak.build_model("cnn2_c5", seed=0, num_classes=12).double()
    zeros = torch.nonzero(embedded.labels == 0).flatten()[:2].tolist()
    others = [int(torch.nonzero(embedded.labels == c).flatten()[0]) for c in (1, 2, 3, 5, 6, 7)]
    index = zeros + others
    images, labels = embedded.images[index].double() / 255, embedded.labels[index]
    gradients = [0.2 * g for g in true_gradients(model, images, labels)]
    found = {}
    for free_scale in (True, False):
        reconstruction = fl_leak.reconstruct(
            model, gradients, batch_size=8, attack="linear", free_scale=free_scale
        )
        found[free_scale] = reconstruction
    assert torch.equal(found[True].labels, torch.sort(labels).values)
    assert not torch.equal(found[False].labels, torch.sort(labels).values)
    assert float(score_batch(images, found[True].inputs.clamp(0, 1)).psnr.min()) >= 60


def test_more_samples_than_classes_is_reported_not_hidden(embedded):
    model = fl_leak.build_model("cnn2_c1", seed=0, num_classes=12)
    images, labels = _batch(embedded, 14)
    reconstruction = fl_leak.reconstruct(
        model,
        true_gradients(model, images, labels),
        batch_size=14,
        attack="linear",
        max_iterations=50,
    )
    last = reconstruction.layers[-1]
    assert last.deficiency_bound > 0
    assert any("not determined" in note for note in reconstruction.notes)
    assert reconstruction.inputs.shape == (14, 3, 32, 32)


def test_label_counts_from_bias_gradient():
    # absent classes carry the mean probability 0.1; class 2 holds two samples, class 5 one
    g = torch.full((6,), 0.1)
    g[2] = (3 * 0.1 - 2) / 3
    g[5] = (3 * 0.1 - 1) / 3
    assert labels_from_counts(estimate_label_counts(g, 3)).tolist() == [2, 2, 5]


def test_round_counts_keeps_present_classes_and_total():
    counts = round_counts(
        torch.tensor([0.2, 2.6, 0.0, 1.4]), torch.tensor([True, True, False, False]), 4
    )
    assert counts.sum() == 4 and counts[0] >= 1 and counts.tolist() == [1, 2, 0, 1]


def test_given_batch_labels_of_the_wrong_count_are_refused(embedded):
    model = fl_leak.build_model("cnn2_c1", seed=0, num_classes=12)
    images, labels = _batch(embedded, 2)
    with pytest.raises(ValueError, match="got 1 labels for batch_size=2"):
        fl_leak.reconstruct(
            model,
            true_gradients(model, images, labels),
            batch_size=2,
            labels=labels[:1],
            attack="linear",
        )


def test_relu_network_deficient_at_its_data_though_a_random_probe_says_full_rank(embedded):
    # cnn2_relu (seed 0) has 2 of 12 conv channels with positive weight sum: a smooth,
    # non-negative image activates ~1.5 units per pixel (1518 of 12288), too few forward rows for
    # 3072 unknowns, while independent uniform pixels activate 3440. The active set reconstructed
    # by the attack is the true one; the deficiency is real, not a wrong mask or derivative.
    model = fl_leak.build_model("cnn2_relu", seed=0, num_classes=12)
    images, labels = _batch(embedded, 1)
    random_probe = fl_leak.audit(model, batch_size=1, max_dense=0)
    at_data = fl_leak.audit(model, batch_size=1, max_dense=0, inputs=images, labels=labels)
    assert random_probe.probe == "random" and at_data.probe == "data"
    assert random_probe.layers[0].forward_equations == 3440
    assert any("depends on the data" in note for note in random_probe.notes)
    assert at_data.layers[0].forward_equations == 1518
    assert at_data.layers[0].deficiency > 1000 and not at_data.full_rank

    gradients = true_gradients(model, images, labels)
    linear = fl_leak.reconstruct(model, gradients, attack="linear")
    layer = linear.layers[0]
    assert layer.forward_equations == 1518  # reconstructed active set = true active set
    assert layer.deficiency_bound == at_data.layers[0].deficiency
    assert any("not determined at the reconstructed active set" in note for note in linear.notes)
    linear_score = float(score_batch(images, linear.inputs.clamp(0, 1)).psnr.min())
    assert linear_score < 20  # the minimum-norm solution of a deficient system, as diagnosed

    hybrid = fl_leak.reconstruct(model, gradients, attack="hybrid", iterations=200)
    assert hybrid.layers[0].corrected
    assert float(score_batch(images, hybrid.inputs.clamp(0, 1)).psnr.min()) > linear_score


@pytest.mark.slow
def test_relu_exact_ranks_at_the_data_and_at_a_random_probe(embedded):
    model = fl_leak.build_model("cnn2_relu", seed=0, num_classes=12)
    images, labels = _batch(embedded, 1)
    assert fl_leak.audit(model, batch_size=1).full_rank  # random probe: rank 3072
    at_data = fl_leak.audit(model, batch_size=1, inputs=images, labels=labels).layers[0]
    assert at_data.method == "svd" and at_data.rank + at_data.deficiency == 3072
    assert at_data.deficiency > 1000


@pytest.mark.slow
def test_relu_network_full_rank_where_audit_says_so(embedded):
    # the same architecture with seed 4 (9 of 12 channels of positive sum): full rank at the data
    model = fl_leak.build_model("cnn2_relu", seed=4, num_classes=12)
    images, labels = _batch(embedded, 1)
    assert fl_leak.audit(model, batch_size=1, inputs=images, labels=labels).full_rank
    reconstruction = fl_leak.reconstruct(
        model, true_gradients(model, images, labels), attack="linear"
    )
    layer = reconstruction.layers[0]
    assert layer.forward_equations < 12 * 32 * 32  # inactive units give no forward rows
    assert not reconstruction.notes
    assert float(score_batch(images, reconstruction.inputs.clamp(0, 1)).psnr.min()) >= 60


def test_relu_lenet_is_deficient_and_hybrid_reports_it(embedded):
    model = fl_leak.build_model("lenet_relu", seed=0, num_classes=12)
    images, labels = _batch(embedded, 1)
    gradients = true_gradients(model, images, labels)
    linear = fl_leak.reconstruct(model, gradients, attack="linear")
    hybrid = fl_leak.reconstruct(model, gradients, attack="hybrid", iterations=200)
    assert any(layer.deficiency_bound > 0 for layer in linear.layers)
    assert hybrid.layers[0].corrected
    linear_score = float(score_batch(images, linear.inputs.clamp(0, 1)).psnr.min())
    hybrid_score = float(score_batch(images, hybrid.inputs.clamp(0, 1)).psnr.min())
    assert hybrid_score > linear_score
