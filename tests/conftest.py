"""Shared fixtures: seeded embedded images and gradients from real autograd."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fl_leak.data import load_dataset


@pytest.fixture(scope="session")
def embedded():
    return load_dataset("embedded")


def true_gradients(model: nn.Module, inputs: Tensor, labels: Tensor) -> list[Tensor]:
    """Gradients of the batch-mean cross-entropy, from torch autograd."""
    loss = F.cross_entropy(model(inputs), labels)
    return [g.detach() for g in torch.autograd.grad(loss, list(model.parameters()))]
