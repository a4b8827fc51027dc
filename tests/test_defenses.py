"""Each defense changes what the server receives the way it claims, checked independently."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping, FedAvg
from opacus.accountants import RDPAccountant
from opacus.accountants.analysis import rdp as rdp_analysis

import fl_leak
from fl_leak.config import compose
from fl_leak.defenses import LocalPool, build_defense, list_defenses
from fl_leak.defenses.base import update_of
from fl_leak.fl.task import sgd_steps
from fl_leak.fl.validation import problems


def _weights(seed: int, scale: float = 1.0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "conv.weight": scale * torch.randn(6, 3, 5, 5, generator=generator, dtype=torch.float64),
        "fc.weight": scale * torch.randn(10, 300, generator=generator, dtype=torch.float64),
        "fc.bias": scale * torch.randn(10, generator=generator, dtype=torch.float64),
        "bn.num_batches_tracked": torch.tensor(3),
    }


def _round(scale: float = 0.01) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    sent = _weights(0)
    trained = {
        name: value + _weights(1, scale)[name] if value.is_floating_point() else value + 1
        for name, value in sent.items()
    }
    return sent, trained


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_every_defense_has_a_config_and_a_name():
    for name in list_defenses():
        settings = compose([f"defense={name}"])
        assert settings.defense.name == name
        build_defense(name, settings.defense.options)  # the YAML's options are the class's


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("prunning", {}, "unknown defense 'prunning'; known defenses: clip_noise, "),
        (
            "prune",
            {"fractoin": 0.5},
            r"unknown option 'fractoin' for defense 'prune' \(did you mean 'fraction'\?\); "
            "its options: fraction",
        ),
        ("prune", {"fraction": 1.5}, r"fraction=1.5 must be in \[0, 1\]"),
        ("topk", {"keep": 0.0}, "keep=0.0 must be in"),
        ("clip_noise", {"where": "router"}, "where='router' must be one of server, client"),
        ("dp_sgd", {"noise_multiplier": 0.0}, "noise_multiplier=0.0 must be positive"),
        ("instahide", {"k": 1}, "k=1 must be at least 2"),
    ],
)
def test_bad_defense_settings_are_named(name, options, message):
    with pytest.raises(ValueError, match=message):
        build_defense(name, options)


def test_a_run_with_a_bad_defense_option_is_refused_before_it_starts():
    found = problems(compose(["defense=prune", "defense.options.fraction=2"]))
    assert found == ["defense='prune': fraction=2 must be in [0, 1]"]


@pytest.mark.parametrize("fraction", [0.0, 0.5, 0.9, 0.99])
def test_prune_zeroes_the_smallest_fraction_of_each_tensor(fraction):
    sent, trained = _round()
    replied = build_defense("prune", {"fraction": fraction}).protect_update(
        sent, trained, _generator()
    )
    original, pruned = update_of(sent, trained), update_of(sent, replied)
    for name, value in original.items():
        zeroed = pruned[name] == 0
        assert int(zeroed.sum()) == math.floor(fraction * value.numel())
        kept = ~zeroed
        torch.testing.assert_close(pruned[name][kept], value[kept], rtol=0, atol=1e-15)
        if zeroed.any() and kept.any():
            assert value[zeroed].abs().max() <= value[kept].abs().min()
    assert torch.equal(replied["bn.num_batches_tracked"], trained["bn.num_batches_tracked"])


def test_topk_keeps_the_largest_entries_of_the_whole_update():
    sent, trained = _round()
    replied = build_defense("topk", {"keep": 0.05}).protect_update(sent, trained, _generator())
    original = torch.cat([value.flatten() for value in update_of(sent, trained).values()])
    kept = torch.cat([value.flatten() for value in update_of(sent, replied).values()])
    count = math.ceil(0.05 * original.numel())
    assert int((kept != 0).sum()) == count
    largest = original.abs().topk(count).indices
    torch.testing.assert_close(kept[largest], original[largest], rtol=0, atol=1e-15)


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_topk_quantises_each_tensor_to_its_bits(bits):
    sent, trained = _round()
    defense = build_defense("topk", {"keep": 0.5, "bits": bits})
    replied = defense.protect_update(sent, trained, _generator())
    for value in update_of(sent, replied).values():
        nonzero = value[value.abs() > 1e-12]  # up to the rounding of sent + update - sent
        levels = torch.unique(torch.round(nonzero / nonzero.abs().max() * 1e6))
        assert len(levels) <= (2 if bits == 1 else 2**bits - 2)  # nonzero levels of 2^b - 1
        assert len(levels) >= 2


def _norm(update: dict[str, torch.Tensor]) -> float:
    return float(torch.cat([value.flatten() for value in update.values()]).norm())


def test_local_clipping_bounds_the_norm_and_keeps_the_direction():
    sent, trained = _round()
    original = update_of(sent, trained)
    defense = build_defense(
        "clip_noise", {"where": "client", "clipping_norm": 0.05, "noise_multiplier": 0.0}
    )
    clipped = update_of(sent, defense.protect_update(sent, trained, _generator()))
    assert _norm(original) > 0.05
    assert _norm(clipped) == pytest.approx(0.05, rel=1e-9)
    for name in original:
        torch.testing.assert_close(clipped[name], original[name] * (0.05 / _norm(original)))


def test_local_noise_has_the_configured_scale():
    sent, trained = _round()
    clip = build_defense(
        "clip_noise", {"where": "client", "clipping_norm": 0.05, "noise_multiplier": 0.0}
    )
    noisy = build_defense(
        "clip_noise", {"where": "client", "clipping_norm": 0.05, "noise_multiplier": 2.0}
    )
    clipped = clip.protect_update(sent, trained, _generator())
    noised = noisy.protect_update(sent, trained, _generator())
    noise = torch.cat([(noised[n] - clipped[n]).flatten() for n in update_of(sent, trained)])
    assert float(noise.std()) == pytest.approx(2.0 * 0.05, rel=0.05)  # 4,660 samples
    assert abs(float(noise.mean())) < 0.01


def test_central_noise_is_flowers_server_side_wrapper_and_leaves_updates_alone():
    sent, trained = _round()
    defense = build_defense("clip_noise", {"clipping_norm": 0.2, "noise_multiplier": 0.5})
    assert defense.protect_update(sent, trained, _generator()) is trained
    inner = FedAvg()
    wrapped = defense.wrap_strategy(inner, num_sampled_clients=4)
    assert isinstance(wrapped, DifferentialPrivacyServerSideFixedClipping)
    assert wrapped.strategy is inner
    assert (wrapped.clipping_norm, wrapped.noise_multiplier, wrapped.num_sampled_clients) == (
        0.2,
        0.5,
        4,
    )


def _tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(12, 5), torch.nn.Sigmoid(), torch.nn.Linear(5, 3)
    ).double()


def _pool(count: int = 40) -> LocalPool:
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(count, 3, 2, 2, generator=generator, dtype=torch.float64)
    labels = torch.randint(3, (count,), generator=generator)
    return LocalPool(images, labels, 3, torch.Generator().manual_seed(2))


def test_dp_sgd_clips_each_sample_gradient_as_computed_by_hand():
    pool = _pool()
    batch = (pool.images[:4], pool.labels[:4])
    model, reference = _tiny_model(), _tiny_model()
    defense = build_defense(
        "dp_sgd", {"noise_multiplier": 1e-12, "max_grad_norm": 0.1, "delta": 1e-5}
    )
    defense.local_training(model, [batch], 0.5, sgd_steps, pool, steps_before=0)
    # per-sample gradients by plain autograd, clipped to 0.1, averaged
    parameters = list(reference.parameters())
    total = [torch.zeros_like(p) for p in parameters]
    for image, label in zip(*batch, strict=True):
        loss = F.cross_entropy(reference(image[None]), label[None])
        grads = torch.autograd.grad(loss, parameters)
        norm = torch.cat([g.flatten() for g in grads]).norm()
        factor = min(1.0, 0.1 / (float(norm) + 1e-6))
        total = [t + factor * g for t, g in zip(total, grads, strict=True)]
    for trained, start, summed in zip(model.parameters(), parameters, total, strict=True):
        torch.testing.assert_close(trained, start - 0.5 * summed / 4, rtol=0, atol=1e-9)


def test_dp_sgd_epsilon_is_the_accountants_for_the_same_settings():
    pool = _pool()
    defense = build_defense("dp_sgd", {"noise_multiplier": 0.8, "max_grad_norm": 1.0})
    batches = [(pool.images[:4], pool.labels[:4])] * 3
    outcome = defense.local_training(_tiny_model(), batches, 0.1, sgd_steps, pool, steps_before=5)
    rate, steps, orders = 4 / 40, 5 + 3, RDPAccountant.DEFAULT_ALPHAS
    rdp = rdp_analysis.compute_rdp(q=rate, noise_multiplier=0.8, steps=steps, orders=orders)
    epsilon, _ = rdp_analysis.get_privacy_spent(orders=orders, rdp=rdp, delta=1e-5)
    assert outcome.metrics["dp-epsilon"] == pytest.approx(epsilon, rel=1e-12)
    assert len(outcome.losses) == 3


def _as_pair_mixture(image, original, pool_images) -> tuple[float, float]:
    """The best fit of ``image`` as ``lam * original + (1 - lam) * p`` over pool images p:
    (residual, lam)."""
    best = (math.inf, 0.0)
    for partner in pool_images:
        direction = (original - partner).flatten()
        if float(direction.norm()) == 0:
            continue
        lam = float(((image - partner).flatten() @ direction) / (direction @ direction))
        residual = float((image - lam * original - (1 - lam) * partner).abs().max())
        best = min(best, (residual, lam))
    return best


def test_mixup_mixes_each_image_with_one_of_the_pool():
    pool = _pool()
    batch = (pool.images[:6], pool.labels[:6])
    [(mixed, soft)] = build_defense("mixup", {"alpha": 1.0}).local_batches([batch], pool)
    assert mixed.shape == batch[0].shape and soft.shape == (6, 3)
    torch.testing.assert_close(soft.sum(dim=1), torch.ones(6, dtype=torch.float64))
    for image, target, original, label in zip(mixed, soft, *batch, strict=True):
        residual, lam = _as_pair_mixture(image, original, pool.images)
        assert residual < 1e-12 and 0 <= lam <= 1
        assert float(target[label]) >= lam - 1e-12  # the label carries at least its share
        assert not torch.equal(image, original)


def test_instahide_flips_signs_of_a_convex_mixture():
    pool = _pool(200)
    batch = (pool.images[:8], pool.labels[:8])
    [(hidden, soft)] = build_defense("instahide", {"k": 4}).local_batches([batch], pool)
    torch.testing.assert_close(soft.sum(dim=1), torch.ones(8, dtype=torch.float64))
    assert hidden.abs().max() <= 1.0
    negative = float((hidden < 0).double().mean())
    assert 0.35 < negative < 0.65  # a random sign per pixel
    assert not torch.allclose(hidden.abs(), batch[0])


def test_defenses_repeat_with_the_same_generator_seed():
    for name in ("mixup", "instahide"):
        runs = []
        for _ in range(2):
            pool = _pool()
            runs.append(
                build_defense(name).local_batches([(pool.images[:3], pool.labels[:3])], pool)
            )
        torch.testing.assert_close(runs[0], runs[1])


def test_records_carry_the_defense_and_its_strength(tmp_path):
    from fl_leak.fl.leakage import UpdateAttacker
    from fl_leak.fl.local_data import load_split
    from fl_leak.fl.sink import ResultSink

    settings = compose(["defense=topk", "defense.options.keep=0.2", "audit.enabled=false"])
    info = load_split(settings.data, train=True).info
    attacker = UpdateAttacker(settings, info, ResultSink(tmp_path, settings, info.class_names))

    record = attacker.record(1, 0)
    assert (record.defense, record.defense_options) == ("topk", "bits=0,keep=0.2")
    assert fl_leak.defenses.build_defense("none").describe() == ""


def test_label_counts_stay_a_batch_when_noise_makes_many_entries_negative():
    from fl_leak.attacks.labels import estimate_label_counts

    bias_gradient = torch.tensor([-0.3, -0.01, 0.2, -0.02, -0.25, 0.1, -0.001], dtype=torch.float64)
    counts = estimate_label_counts(bias_gradient, batch_size=2)
    assert counts.tolist() == [1, 0, 0, 0, 1, 0, 0]  # the two most negative classes
