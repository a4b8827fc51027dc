"""ownapp: the model, the data and the training of this app (no fl-leak in here)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fl_leak.data import load_dataset

INPUT_SHAPE = (3, 32, 32)
NUM_CLASSES = 12


class Net(nn.Module):
    """A small CNN: a 3x3 convolution, tanh, and a linear classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, kernel_size=3)
        self.act = nn.Tanh()
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(6 * 30 * 30, NUM_CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.flatten(self.act(self.conv(x))))


def load_data(partition_id: int, num_partitions: int) -> tuple[Tensor, Tensor]:
    """This client's images (float32 in [0, 1]) and labels: every ``num_partitions``-th sample.

    The images are fl-leak's embedded set (32x32 photographs of 12 classes, shipped with it): no
    download. Any data set works the same way.
    """
    dataset = load_dataset("embedded", train=True)
    images = dataset.images[partition_id::num_partitions].float() / 255.0
    return images, dataset.labels[partition_id::num_partitions]


def round_batch(
    images: Tensor, labels: Tensor, batch_size: int, server_round: int, partition_id: int
) -> tuple[Tensor, Tensor]:
    """The batch a client trains on in a round (drawn with a seed of the round and partition)."""
    generator = torch.Generator().manual_seed(1000 * server_round + partition_id)
    chosen = torch.randperm(len(images), generator=generator)[:batch_size]
    return images[chosen], labels[chosen]


def train(model: nn.Module, inputs: Tensor, labels: Tensor, lr: float, steps: int) -> float:
    """``steps`` steps of plain SGD on one batch; the mean training loss."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(inputs), labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return sum(losses) / len(losses)


@torch.no_grad()
def test(model: nn.Module, images: Tensor, labels: Tensor) -> tuple[float, float]:
    """Loss and accuracy of ``model`` on the images."""
    model.eval()
    logits = model(images)
    loss = F.cross_entropy(logits, labels).item()
    return loss, (logits.argmax(dim=1) == labels).float().mean().item()
