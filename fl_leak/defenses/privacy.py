"""Differential privacy: DP-SGD on the client (Opacus) and update clipping plus Gaussian noise.

``clip_noise`` with ``where=server`` is central DP through Flower's own wrapper
(``DifferentialPrivacyServerSideFixedClipping``): the server clips every update and adds noise to
the aggregate, so the malicious strategy inside it sees each clipped update before any noise.
With ``where=client`` (local DP) the client clips its update with Flower's
``compute_clip_model_update`` and adds the noise itself. Flower's client mods for this
(``fixedclipping_mod``, ``LocalDpMod``) read the legacy record names (``fitins.parameters``) and
fail on Message-API replies, and ``LocalDpMod`` draws from the unseeded global NumPy generator;
here the noise is drawn from the client's generator, seeded per (seed, round, client).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping, Strategy
from flwr.supercore.differential_privacy import compute_clip_model_update
from torch import Tensor, nn

from fl_leak.defenses.base import (
    Batch,
    Defense,
    LocalOutcome,
    LocalPool,
    Trainer,
    check_fraction,
    check_positive,
    register_defense,
)

EPSILON_METRIC = "dp-epsilon"


@register_defense("dp_sgd")
@dataclass(frozen=True)
class DpSgd(Defense):
    """DP-SGD during local training with Opacus: per-sample gradients clipped to
    ``max_grad_norm``, Gaussian noise of ``noise_multiplier * max_grad_norm`` added to their sum.

    Every record carries the accountant's epsilon at ``delta`` for the client's steps so far
    (RDP accounting; sample rate = batch size / partition size).
    """

    noise_multiplier: float = 1.0
    max_grad_norm: float = 1.0
    delta: float = 1e-5

    def __post_init__(self) -> None:
        check_positive("noise_multiplier", self.noise_multiplier)
        check_positive("max_grad_norm", self.max_grad_norm)
        check_fraction("delta", self.delta, closed_low=False)

    def local_training(
        self,
        model: nn.Module,
        batches: list[Batch],
        lr: float,
        train: Trainer,
        pool: LocalPool,
        steps_before: int,
    ) -> LocalOutcome:
        """Train with Opacus' ``DPOptimizer`` on per-sample gradients; report epsilon."""
        # imported here: Opacus takes most of a second to load, in every client process
        from opacus import GradSampleModule
        from opacus.accountants import RDPAccountant
        from opacus.optimizers import DPOptimizer

        batch_size = len(batches[0][1])
        sample_rate = batch_size / len(pool.labels)
        private = GradSampleModule(model)
        optimizer = DPOptimizer(
            torch.optim.SGD(model.parameters(), lr=lr),
            noise_multiplier=self.noise_multiplier,
            max_grad_norm=self.max_grad_norm,
            expected_batch_size=batch_size,
            generator=pool.generator,
        )
        accountant = RDPAccountant()
        if steps_before:
            accountant.history = [(self.noise_multiplier, sample_rate, steps_before)]
        optimizer.attach_step_hook(accountant.get_optimizer_hook_fn(sample_rate))
        losses = []
        with warnings.catch_warnings():  # Opacus' hooks on a first layer whose input needs none
            warnings.filterwarnings("ignore", "Full backward hook is firing", UserWarning)
            for inputs, labels in batches:
                optimizer.zero_grad()
                loss = F.cross_entropy(private(inputs), labels)  # the clients' batch-mean loss
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
        private.remove_hooks()
        return LocalOutcome(losses, {EPSILON_METRIC: float(accountant.get_epsilon(self.delta))})


@register_defense("clip_noise")
@dataclass(frozen=True)
class ClipNoise(Defense):
    """Clip the update to L2 norm ``clipping_norm`` and add Gaussian noise.

    ``where=client`` (local DP): noise of std ``noise_multiplier * clipping_norm`` on each update.
    ``where=server`` (central DP, Flower's server-side fixed clipping): noise of std
    ``noise_multiplier * clipping_norm / clients`` on the aggregate, after the server saw each
    update.
    """

    places: ClassVar[tuple[str, ...]] = ("server", "client")
    clipping_norm: float = 0.1
    noise_multiplier: float = 1.0
    where: str = "server"

    def __post_init__(self) -> None:
        check_positive("clipping_norm", self.clipping_norm)
        if self.noise_multiplier < 0:
            raise ValueError(f"noise_multiplier={self.noise_multiplier} must not be negative")
        if self.where not in self.places:
            raise ValueError(f"where={self.where!r} must be one of {', '.join(self.places)}")

    def protect_update(
        self, sent: dict[str, Tensor], trained: dict[str, Tensor], generator: torch.Generator
    ) -> dict[str, Tensor]:
        """Local DP: clip the update, add noise of std ``noise_multiplier * clipping_norm``."""
        if self.where != "client":
            return trained
        names = [name for name in trained if torch.is_floating_point(trained[name])]
        weights = [trained[name].numpy().copy() for name in names]
        compute_clip_model_update(
            weights, [sent[name].numpy() for name in names], self.clipping_norm
        )
        std = self.noise_multiplier * self.clipping_norm
        protected = dict(trained)
        for name, value in zip(names, weights, strict=True):
            clipped = torch.from_numpy(np.asarray(value)).to(trained[name].dtype)
            noise = torch.randn(clipped.shape, generator=generator, dtype=torch.float64)
            protected[name] = clipped + (std * noise).to(clipped.dtype)
        return protected

    def wrap_strategy(self, strategy: Strategy, num_sampled_clients: int) -> Strategy:
        """Central DP: Flower's server-side fixed-clipping wrapper around ``strategy``."""
        if self.where != "server":
            return strategy
        return DifferentialPrivacyServerSideFixedClipping(
            strategy,
            noise_multiplier=self.noise_multiplier,
            clipping_norm=self.clipping_norm,
            num_sampled_clients=num_sampled_clients,
        )
