"""What clients and server share: the model, its weights as Flower arrays, training steps."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
import torch.nn.functional as F
from flwr.app import ArrayRecord
from torch import Tensor, nn

from fl_leak.config import RunConfig
from fl_leak.data import DatasetInfo, ImageDataset
from fl_leak.models import build_model

ARRAYS_KEY = "arrays"
METRICS_KEY = "metrics"
NUM_EXAMPLES = "num-examples"


def initial_model(settings: RunConfig, info: DatasetInfo) -> nn.Module:
    """The global model of round 1: ``settings.model`` for the data set, seeded, in its dtype."""
    model = build_model(settings.model, info.input_shape, info.num_classes, seed=settings.seed)
    return model.to(settings.dtype.torch)


def model_with(settings: RunConfig, info: DatasetInfo, arrays: ArrayRecord) -> nn.Module:
    """The model of ``settings`` holding the weights of ``arrays``."""
    model = build_model(settings.model, info.input_shape, info.num_classes)
    model.to(settings.dtype.torch).load_state_dict(arrays.to_torch_state_dict())
    return model


def to_arrays(model: nn.Module) -> ArrayRecord:
    """The model's weights as an ``ArrayRecord`` (copies, in the model's dtype)."""
    return arrays_of(model.state_dict())


def arrays_of(state: Mapping[str, Tensor]) -> ArrayRecord:
    """Named tensors as an ``ArrayRecord`` (copies)."""
    return ArrayRecord({name: value.detach().clone() for name, value in state.items()})


def samples(dataset: ImageDataset, indices: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Images (in [0, 1], ``dtype``) and labels of ``dataset`` at ``indices``."""
    return dataset.images[indices].to(dtype) / 255.0, dataset.labels[indices]


def mean_loss(model: nn.Module, inputs: Tensor, labels: Tensor) -> Tensor:
    """Batch-mean cross-entropy, the loss every attack assumes."""
    return F.cross_entropy(model(inputs), labels)


def sgd_steps(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], lr: float) -> list[float]:
    """One plain SGD step (no momentum, no weight decay) per batch; returns each step's loss.

    Labels are class indices, or class probabilities (input-mixing defenses).
    """
    losses = []
    for inputs, labels in batches:
        loss = mean_loss(model, inputs, labels)
        gradients = torch.autograd.grad(loss, list(model.parameters()))
        with torch.no_grad():
            for parameter, gradient in zip(model.parameters(), gradients, strict=True):
                parameter.sub_(lr * gradient)
        losses.append(float(loss.detach()))
    return losses


@torch.no_grad()
def evaluate(model: nn.Module, dataset: ImageDataset, batch_size: int = 256) -> tuple[float, float]:
    """Accuracy and mean cross-entropy of ``model`` on ``dataset``."""
    dtype = next(model.parameters()).dtype
    correct, total_loss = 0, 0.0
    for start in range(0, len(dataset), batch_size):
        indices = torch.arange(start, min(start + batch_size, len(dataset)))
        inputs, labels = samples(dataset, indices, dtype)
        logits = model(inputs)
        total_loss += float(F.cross_entropy(logits, labels, reduction="sum"))
        correct += int((logits.argmax(dim=1) == labels).sum())
    return correct / len(dataset), total_loss / len(dataset)
