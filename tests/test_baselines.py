"""The optimisation baselines ``ig`` and ``dlg`` through ``fl_leak.reconstruct``."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

import fl_leak
from fl_leak.attacks.baselines.common import Progress, Stall, prepare_problem
from fl_leak.attacks.baselines.ig import IGOptions
from fl_leak.attacks.correction import cosine_distance
from fl_leak.errors import FlLeakError, GradientMismatchError
from fl_leak.metrics import psnr, score_batch
from tests.conftest import true_gradients

CLASSES = 12  # the embedded set's


def _update(name, embedded, indices, train=True):
    model = fl_leak.build_model(name, num_classes=CLASSES, seed=0)
    model.train(train)
    x = torch.stack([embedded[i][0] for i in indices])
    y = torch.tensor([embedded[i][1] for i in indices])
    return model, x, y, true_gradients(model, x, y)


def _trajectory(attack, model, gradients, **options):
    losses: list[float] = []

    def record(progress: Progress) -> None:
        losses.append(progress.loss)

    rec = fl_leak.reconstruct(model, gradients, attack=attack, callback=record, **options)
    return rec, losses


# Documented in docs/baselines.md: the easy case, cnn2_c1 at batch 1 with labels recovered.
EASY = {
    "ig": ({"iterations": 300}, 96, 35.0),
    "dlg": ({"iterations": 30}, 0, 40.0),
}


@pytest.mark.parametrize("attack", sorted(EASY))
def test_lowers_its_objective_and_recovers_the_easy_case(attack, embedded):
    options, index, floor = EASY[attack]
    model, x, y, gradients = _update("cnn2_c1", embedded, [index])

    rec, losses = _trajectory(attack, model, gradients, **options)

    assert len(losses) == options["iterations"]
    assert min(losses) < 0.05 * losses[0]
    assert float(psnr(rec.inputs.double().clamp(0, 1), x)) >= floor
    assert rec.labels.tolist() == y.tolist()
    assert rec.labels_recovered
    assert rec.attack == attack
    assert rec.best_restart == 0 and len(rec.restarts) == 1
    final = rec.restarts[0].final_objective
    assert final <= min(losses)  # the best iterate, the one after the last step included
    assert rec.restarts[0].iterations == options["iterations"]
    assert not rec.restarts[0].early_stop and not rec.restarts[0].diverged
    assert 0 < rec.restarts[0].seconds <= rec.seconds


@pytest.mark.parametrize("attack", ["ig", "dlg"])
@pytest.mark.parametrize("name", ["resnet_small", "maxpool_cnn"])
def test_any_module_batchnorm_in_train_mode_and_max_pooling(attack, name, embedded):
    model, x, _, gradients = _update(name, embedded, [0, 48])
    before = {k: v.clone() for k, v in model.state_dict().items()}

    rec, losses = _trajectory(attack, model, gradients, batch_size=2, iterations=4)

    assert rec.inputs.shape == x.shape
    assert rec.labels.shape == (2,)
    assert torch.isfinite(rec.inputs).all()
    assert min(losses) < losses[0]
    assert model.training  # the caller's model: mode and BatchNorm buffers untouched
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("mode", [True, False])
def test_model_is_used_in_the_mode_it_is_passed_in(mode, embedded):
    model, x, y, train_gradients = _update("resnet_small", embedded, [0, 48], train=True)
    model.train(mode)
    problem = prepare_problem(model, train_gradients, (3, 32, 32), 2, y, IGOptions())

    trial = problem.trial_gradients(x, None)

    distance = float(cosine_distance(trial, problem.observed).detach())
    # train mode: BatchNorm normalises with the batch's statistics, as the client did
    assert distance < 1e-5 if mode else distance > 1e-3


def test_ig_batch_with_recovered_labels_is_matched(embedded):
    model, x, y, gradients = _update("cnn2_c1", embedded, [96, 192])

    rec = fl_leak.reconstruct(model, gradients, batch_size=2, attack="ig", iterations=600)
    scores = score_batch(x, rec.inputs.double().clamp(0, 1))

    assert sorted(rec.labels.tolist()) == sorted(y.tolist())
    assert "recovered from the last layer's gradients" in rec.notes[1]
    assert scores.mean_psnr >= 25.0, scores.psnr.tolist()


def test_dlg_batch_labels_follow_their_images_through_the_matching(embedded):
    model, x, y, gradients = _update("cnn2_c1", embedded, [96, 288])

    rec = fl_leak.reconstruct(model, gradients, batch_size=2, attack="dlg", iterations=50)
    scores = score_batch(x, rec.inputs.double().clamp(0, 1))

    assert scores.permutation.tolist() == [1, 0]  # the batch came back in the other order
    assert rec.labels[scores.permutation].tolist() == y.tolist()
    assert "optimised jointly" in rec.notes[1]
    assert scores.mean_psnr >= 40.0, scores.psnr.tolist()


def test_restarts_keep_the_lowest_loss(embedded):
    model, _, _, gradients = _update("cnn2_c1", embedded, [96])

    rec, losses = _trajectory("ig", model, gradients, iterations=20, restarts=3, seed=5)

    final = [restart.final_objective for restart in rec.restarts]
    assert len(final) == 3 and len(losses) == 60
    assert [restart.iterations for restart in rec.restarts] == [20, 20, 20]
    assert rec.best_restart == int(np.argmin(final))
    assert final[rec.best_restart] <= min(losses)
    assert sum(restart.seconds for restart in rec.restarts) <= rec.seconds


def test_seed_makes_runs_reproducible(embedded):
    model, _, _, gradients = _update("cnn2_c1", embedded, [96])
    first = fl_leak.reconstruct(model, gradients, attack="ig", iterations=10, seed=1)
    second = fl_leak.reconstruct(model, gradients, attack="ig", iterations=10, seed=1)
    other = fl_leak.reconstruct(model, gradients, attack="ig", iterations=10, seed=2)
    assert torch.equal(first.inputs, second.inputs)
    assert not torch.equal(first.inputs, other.inputs)


def test_box_constraint_holds(embedded):
    model, _, _, gradients = _update("cnn2_c1", embedded, [0])
    rec = fl_leak.reconstruct(model, gradients, attack="ig", iterations=20, input_range=(0.2, 0.7))
    assert rec.inputs.min() >= 0.2 and rec.inputs.max() <= 0.7


def test_early_stop_on_a_stalled_loss(embedded):
    model, _, _, gradients = _update("cnn2_c1", embedded, [0])

    rec, losses = _trajectory("dlg", model, gradients, iterations=300, patience=3, tolerance=0.5)

    assert len(losses) < 300
    assert rec.restarts[0].early_stop
    assert rec.restarts[0].iterations == len(losses)


def test_stall_counts_iterations_without_relative_improvement():
    stall = Stall(patience=2, tolerance=0.1)
    # 10 sets the reference, 5 improves it by more than 10 %, 4.6 and 4.8 do not
    assert [stall.update(loss) for loss in (10.0, 5.0, 4.6, 4.8)] == [False, False, False, True]
    assert not Stall(patience=None, tolerance=0.1).update(1.0)


def test_ig_moves_to_the_next_step_size_before_stopping(embedded, caplog):
    model, _, _, gradients = _update("cnn2_c1", embedded, [0])
    with caplog.at_level(logging.INFO, logger="fl_leak.attacks.baselines"):
        rec = fl_leak.reconstruct(
            model, gradients, attack="ig", iterations=4800, patience=2, tolerance=0.9
        )
    stalls = [r.getMessage() for r in caplog.records if "stalled" in r.getMessage()]
    # each stall first enters the next of the 3 decay stages; the 4th ends the restart
    assert len(stalls) == 3
    assert rec.restarts[0].early_stop
    assert rec.restarts[0].iterations < 4 * 4


def test_progress_is_logged_every_n_iterations(embedded, caplog):
    model, _, _, gradients = _update("cnn2_c1", embedded, [0])
    with caplog.at_level(logging.INFO, logger="fl_leak.attacks.baselines"):
        fl_leak.reconstruct(model, gradients, attack="ig", iterations=25, log_every=10)
    lines = [r.getMessage() for r in caplog.records]
    assert [line.split(" loss ")[0] for line in lines[:2]] == [
        "ig restart 1 iteration 10",
        "ig restart 1 iteration 20",
    ]
    assert "25 iterations, best loss" in lines[2]


def test_dtype_and_device(embedded):
    model, x, _, gradients = _update("cnn2_c1", embedded, [0])
    as_asked = fl_leak.reconstruct(
        model, gradients, attack="dlg", iterations=2, dtype="float64", device="cpu"
    )
    as_model = fl_leak.reconstruct(
        model.double(), [g.double() for g in gradients], attack="ig", iterations=2
    )
    assert as_asked.inputs.dtype == torch.float64 and as_asked.inputs.shape == x.shape
    assert as_model.inputs.dtype == torch.float64  # dtype=None keeps the model's


@pytest.mark.parametrize(
    "attack,options,message",
    [
        ("ig", {"iterations": 0}, "iterations must be a positive integer, got 0"),
        ("ig", {"lr": -1}, "lr must be a positive number"),
        ("ig", {"tv_weight": -0.1}, "tv_weight must be a non-negative number"),
        ("ig", {"restarts": 1.5}, "restarts must be a positive integer"),
        ("ig", {"label_strategy": "oracle"}, "label_strategy must be one of"),
        ("ig", {"input_range": (1, 0)}, "input_range must be"),
        ("ig", {"input_range": (0, 0.5, 1)}, "input_range must be"),
        ("ig", {"patience": 0}, "patience must be a positive integer or None"),
        ("ig", {"dtype": "float16"}, "dtype must be one of"),
        ("ig", {"callback": 3}, "callback must be callable"),
        ("ig", {"max_evaluations": 5}, "unknown option.*'max_evaluations'.*'ig'.*tv_weight"),
        ("dlg", {"tv_weight": 0.1}, "unknown option.*'tv_weight'.*'dlg'.*line_search"),
        ("dlg", {"line_search": "armijo"}, "line_search must be one of"),
        ("dlg", {"history_size": 0}, "history_size must be a positive integer"),
        ("dlg", {"tolerance": -1}, "tolerance must be a non-negative number"),
    ],
)
def test_bad_options_are_named(attack, options, message, embedded):
    model, _, _, gradients = _update("cnn2_c1", embedded, [0])
    with pytest.raises(FlLeakError, match=message):
        fl_leak.reconstruct(model, gradients, attack=attack, **options)


def test_bad_inputs_are_refused_before_any_work(embedded):
    model, _, _, gradients = _update("cnn2_c1", embedded, [0])
    with pytest.raises(GradientMismatchError, match="got 2 gradient tensors"):
        fl_leak.reconstruct(model, gradients[:2], attack="ig")
    with pytest.raises(FlLeakError, match="got 1 labels for batch_size=2"):
        fl_leak.reconstruct(model, gradients, batch_size=2, labels=torch.tensor([1]), attack="dlg")
    with pytest.raises(FlLeakError, match="batch_size must be a positive integer"):
        fl_leak.reconstruct(model, gradients, batch_size=0, attack="ig")


def test_recovery_without_a_biased_head_points_to_the_alternatives():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 5, bias=False))
    gradients = [torch.randn_like(p) for p in model.parameters()]
    with pytest.raises(FlLeakError, match="pass labels= or label_strategy='joint'"):
        fl_leak.reconstruct(model, gradients, input_shape=(3, 2, 2), attack="ig")
    rec = fl_leak.reconstruct(
        model, gradients, input_shape=(3, 2, 2), attack="ig", label_strategy="joint", iterations=2
    )
    assert rec.labels.shape == (1,)
