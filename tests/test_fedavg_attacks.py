"""The FedAvg attacks: the client's schedule, its simulation, the order search, the trajectory
fixed point (``fedavg_hybrid``), the unrolled optimisation (``fedavg_unroll``), and a real
``fl-leak`` run scored against every sample the client trained on.

The observed updates come from the client's own SGD code (:func:`fl_leak.fl.task.sgd_steps`,
real torch autograd), never from the attacks' simulation.
"""

from __future__ import annotations

import copy
import json
from dataclasses import replace

import pytest
import torch
from torch import nn

import fl_leak
import fl_leak.fl.local_data
from fl_leak.attacks import check_attack_options
from fl_leak.attacks.fedavg.anderson import Anderson
from fl_leak.attacks.fedavg.order import best_order
from fl_leak.attacks.fedavg.schedule import (
    Schedule,
    ScheduleOptions,
    relative_distance,
    simulate_update,
    trained_samples,
    with_schedule,
)
from fl_leak.errors import FlLeakError
from fl_leak.fl.local_data import RoundPlan
from fl_leak.fl.oracle import Oracle
from fl_leak.fl.task import sgd_steps
from fl_leak.metrics import score_batch
from fl_leak.schedule import step_count

SHAPE = (1, 8, 8)


def small_model(seed: int = 0) -> nn.Module:
    """Conv 1->4 k3 (4x6x6, full rank per sample), tanh, and a 4-class head, in float64."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, bias=False), nn.Tanh(), nn.Flatten(), nn.Linear(144, 4)
    ).double()


def client_update(
    model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, steps: list[list[int]], lr: float
) -> list[torch.Tensor]:
    """What the server derives from a client's reply: ``(w_sent - w_returned) / (lr * steps)``,
    the client having trained with the project's SGD."""
    client = copy.deepcopy(model)
    sgd_steps(client, [(inputs[step], labels[step]) for step in steps], lr)
    scale = lr * len(steps)
    return [
        (sent.detach() - returned.detach()) / scale
        for sent, returned in zip(model.parameters(), client.parameters(), strict=True)
    ]


@pytest.fixture(scope="module")
def two_steps():
    """Two local steps of one image each (labels 2 then 0), lr 0.01, on the small network."""
    generator = torch.Generator().manual_seed(1)
    inputs = torch.rand(2, *SHAPE, generator=generator, dtype=torch.float64)
    labels = torch.tensor([2, 0])
    model = small_model()
    return model, inputs, labels, client_update(model, inputs, labels, [[0], [1]], 0.01)


def test_schedule_passes_and_batches():
    schedule = Schedule(samples=5, batch=2, steps=4, lr=0.1)
    assert schedule.passes == 2
    assert schedule.batches(((4, 3, 2, 1, 0), (0, 1, 2, 3, 4))) == [[4, 3], [2, 1], [0], [0, 1]]
    assert trained_samples(samples=100, batch=2, steps=3, epochs=0) == 6
    assert trained_samples(samples=5, batch=2, steps=4, epochs=0) == 5
    assert trained_samples(samples=7, batch=2, steps=1, epochs=2) == 7


def test_simulated_update_is_the_clients(two_steps):
    model, inputs, labels, observed = two_steps
    schedule = Schedule(samples=2, batch=1, steps=2, lr=0.01)
    simulated = simulate_update(model, inputs, labels, schedule, ((0, 1),))
    assert relative_distance(simulated, observed) < 1e-12
    swapped = simulate_update(model, inputs, labels, schedule, ((1, 0),))
    assert relative_distance(swapped, observed) > 1e-6  # the order shows at second order


def test_order_search_finds_the_steps_of_exact_samples():
    generator = torch.Generator().manual_seed(2)
    inputs = torch.rand(4, *SHAPE, generator=generator, dtype=torch.float64)
    labels = torch.tensor([1, 3, 0, 2])
    model = small_model()
    truth = [[2], [0], [3], [1]]
    observed = client_update(model, inputs, labels, truth, 0.05)
    schedule = Schedule(samples=4, batch=1, steps=4, lr=0.05)

    def residual(order):
        return relative_distance(simulate_update(model, inputs, labels, schedule, order), observed)

    found = best_order(schedule, residual)
    assert found.order == ((2, 0, 3, 1),)
    assert found.residual < 1e-12
    assert best_order(schedule, residual, start=((0, 1, 2, 3),)).order == ((2, 0, 3, 1),)


def test_anderson_solves_a_linear_fixed_point_faster_than_plain_iteration():
    generator = torch.Generator().manual_seed(3)
    a = torch.randn(6, 6, generator=generator, dtype=torch.float64)
    a = 0.9 * a / torch.linalg.matrix_norm(a, 2)
    b = torch.randn(6, generator=generator, dtype=torch.float64)
    solution = torch.linalg.solve(torch.eye(6, dtype=torch.float64) - a, b)
    accelerated, plain = Anderson(memory=6, mixing=1.0), Anderson(memory=0, mixing=1.0)
    x = y = torch.zeros(6, dtype=torch.float64)
    for _ in range(12):
        x, y = accelerated.step(x, a @ x + b), plain.step(y, a @ y + b)
    assert torch.linalg.norm(x - solution) < 1e-8
    assert torch.linalg.norm(y - solution) > 1e-4


def psnr_of(inputs: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(score_batch(inputs, reconstruction.clamp(0, 1)).psnr)


def test_fedavg_hybrid_is_near_exact_where_first_order_is_not(two_steps):
    model, inputs, labels, observed = two_steps
    schedule = {"local_lr": 0.01, "local_steps": 2, "local_batch_size": 1}
    first = fl_leak.reconstruct(model, observed, SHAPE, batch_size=2, attack="linear")
    rec = fl_leak.reconstruct(
        model, observed, SHAPE, batch_size=2, attack="fedavg_hybrid", **schedule
    )
    assert sorted(rec.labels.tolist()) == sorted(labels.tolist()) and rec.labels_recovered
    assert psnr_of(inputs, first.inputs).max() < 60
    assert psnr_of(inputs, rec.inputs).min() > 100
    trajectory = rec.trajectory
    assert trajectory is not None and trajectory.converged
    assert trajectory.residuals[-1] <= 1e-9 < trajectory.residuals[0]
    # the order found puts the label-2 sample first, as the client did
    steps = [rec.labels[visit].item() for visit in trajectory.order[0]]
    assert steps == [2, 0]


def one_sample_steps(
    model: nn.Module,
    observed: list[torch.Tensor],
    shape: tuple[int, ...],
    steps: int,
    lr: float,
    **options: object,
) -> fl_leak.Reconstruction:
    """``fedavg_hybrid`` on the update of ``steps`` local steps of one new sample each."""
    return fl_leak.reconstruct(
        model,
        observed,
        shape,
        batch_size=steps,
        attack="fedavg_hybrid",
        local_lr=lr,
        local_steps=steps,
        local_batch_size=1,
        **options,
    )


def test_fedavg_hybrid_continued_in_the_learning_rate_ends_at_the_clients_rate(two_steps):
    model, inputs, _, observed = two_steps
    rec = one_sample_steps(
        model, observed, SHAPE, 2, 0.01, lr_stages=2, stage_iterations=2, anderson_memory=0
    )
    trajectory = rec.trajectory
    assert trajectory is not None
    assert trajectory.iterations > 2  # the first stage ran, then the last one
    assert any("2 stages" in note for note in rec.notes)
    # the residual is the one at the client's rate: it only vanishes where the last stage ran
    assert trajectory.converged and trajectory.residuals[-1] <= 1e-9
    assert psnr_of(inputs, rec.inputs).min() > 100


def test_fedavg_hybrid_runs_again_continued_where_the_plain_fixed_point_stops_short(two_steps):
    model, _, _, observed = two_steps
    short = {"trajectory_iterations": 1, "stage_iterations": 1}
    plain = one_sample_steps(model, observed, SHAPE, 2, 0.01, retry_stages=0, **short)
    again = one_sample_steps(model, observed, SHAPE, 2, 0.01, retry_stages=2, **short)
    assert plain.trajectory is not None and again.trajectory is not None
    assert not plain.trajectory.converged
    assert not any("run again" in note for note in plain.notes)
    assert any("run again" in note for note in again.notes)
    # the second run's two stages of one iteration each follow the first run's one
    assert again.trajectory.iterations == plain.trajectory.iterations + 2
    assert min(again.trajectory.residuals) <= min(plain.trajectory.residuals)


@pytest.mark.slow
def test_fedavg_hybrid_continuation_recovers_cnn2_c5_four_steps():
    """cnn2_c5 (square, ill-conditioned conv layer), 4 local steps of one embedded image each at
    lr 0.01: the plain fixed point diverges from the first-order estimate (about 8 dB); by default
    it is then run again continued over 10 learning-rate stages, and every image exceeds 60 dB."""
    from fl_leak.data import load_dataset
    from fl_leak.models import build_model

    data = load_dataset("embedded")
    index = torch.stack([torch.nonzero(data.labels == c)[0, 0] for c in range(4)])
    inputs, labels = data.images[index].double() / 255.0, data.labels[index]
    model = build_model("cnn2_c5", (3, 32, 32), 10, seed=0).double()
    observed = client_update(model, inputs, labels, [[k] for k in range(4)], 0.01)
    rec = one_sample_steps(
        model,
        observed,
        (3, 32, 32),
        4,
        0.01,
        trajectory_iterations=20,
    )
    assert any("run again" in note for note in rec.notes)
    assert sorted(rec.labels.tolist()) == labels.tolist()
    assert psnr_of(inputs, rec.inputs[rec.labels.argsort()]).min() >= 60


def test_fedavg_unroll_beats_first_order(two_steps):
    model, inputs, _, observed = two_steps
    first = fl_leak.reconstruct(model, observed, SHAPE, batch_size=2, attack="linear")
    seen = []
    rec = fl_leak.reconstruct(
        model,
        observed,
        SHAPE,
        batch_size=2,
        attack="fedavg_unroll",
        local_lr=0.01,
        local_steps=2,
        local_batch_size=1,
        iterations=60,
        callback=seen.append,
    )
    assert len(seen) == rec.restarts[0].iterations
    assert psnr_of(inputs, rec.inputs).mean() > psnr_of(inputs, first.inputs).mean() + 3
    assert rec.trajectory is not None
    assert rec.trajectory.residuals[-1] < rec.trajectory.residuals[0]


def test_schedule_options_are_checked_before_work():
    with pytest.raises(FlLeakError, match="local_lr"):
        check_attack_options("fedavg_hybrid", {})
    with pytest.raises(FlLeakError, match="local_steps"):
        check_attack_options("fedavg_unroll", {"local_lr": 0.1, "local_steps": 0})
    with pytest.raises(FlLeakError, match="lr_stages"):
        check_attack_options("fedavg_hybrid", {"local_lr": 0.1, "lr_stages": 0})
    options = with_schedule("fedavg_unroll", {"iterations": 5}, {"local_lr": 0.1})
    assert options == {"iterations": 5, "local_lr": 0.1}
    assert with_schedule("hybrid", {"iterations": 5}, {"local_lr": 0.1}) == {"iterations": 5}
    with pytest.raises(FlLeakError, match="set by the server"):
        with_schedule("fedavg_hybrid", {"local_lr": 0.1}, {"local_lr": 0.1})


def test_step_count_rule_is_shared_by_the_client_and_the_attacks():
    class Fl:  # the settings a client trains with (``FlConfig``'s fields)
        batch_size, local_steps, local_epochs = 3, 4, 2

    assert fl_leak.fl.local_data.step_count is step_count
    assert step_count(Fl(), 7) == 2 * 3  # two passes of batches 3, 3, 1
    options = ScheduleOptions(local_lr=0.1, local_steps=4, local_batch_size=3, local_epochs=2)
    assert options.schedule(7).steps == step_count(Fl(), 7)
    Fl.local_epochs = 0
    assert step_count(Fl(), 7) == replace(options, local_epochs=0).schedule(7).steps == 4


def test_round_plan_and_oracle_keep_the_samples_in_order_of_first_use():
    plan = RoundPlan(samples=torch.arange(10), steps=[torch.tensor([7, 3]), torch.tensor([5, 7])])
    assert plan.trained.tolist() == [7, 3, 5]
    oracle = Oracle(torch.arange(3.0).reshape(3, 1), torch.tensor([0, 1, 2]))
    assert oracle.first(2).labels.tolist() == [0, 1]
    with pytest.raises(ValueError, match="holds 3 samples"):
        oracle.first(4)


@pytest.mark.slow
def test_fl_leak_run_scores_fedavg_against_every_sample(tmp_path):
    from fl_leak.config import compose
    from fl_leak.fl import simulate

    settings = compose(
        [
            "model=cnn2_c1",
            "attack=fedavg_hybrid",
            "dtype=float64",
            "fl.num_clients=2",
            "fl.rounds=1",
            "fl.batch_size=1",
            "fl.local_steps=2",
            "fl.local_data=partition",
            "fl.lr=0.01",
            "audit.enabled=false",
            "+attack.options.trajectory_iterations=12",
        ]
    )
    simulate(settings, tmp_path)
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert len(records) == 2
    for record in records:
        assert record["status"] == "ok", record
        assert record["samples"] == 2  # both samples the client trained on
        assert record["steps"] == 2
        assert record["label_accuracy"] == 1.0
        assert record["psnr"] >= 60
