"""``fl_leak.recover_labels``: a batch's labels from a model's gradients, without its inputs."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from fl_leak.attacks.labels import batch_labels
from fl_leak.attacks.linear.activations import Identity, activation_for
from fl_leak.attacks.linear.chain import check_gradients
from fl_leak.attacks.linear.last_layer import LastLayer
from fl_leak.errors import FlLeakError


def output_layer(model: nn.Module, gradients: Sequence[Tensor]) -> LastLayer:
    """The model's last ``nn.Linear`` (with bias), the activation after it and their gradients.

    Only element-wise activations (or ``nn.Identity``) may follow it among the model's leaf
    modules in registration order; anything else is refused with a ``FlLeakError``.
    """
    leaves = [module for module in model.modules() if not list(module.children())]
    heads = [k for k, module in enumerate(leaves) if isinstance(module, nn.Linear)]
    if not heads or leaves[heads[-1]].bias is None:
        raise FlLeakError(
            "label recovery needs the model to end in an nn.Linear with a bias (one output per "
            "class); pass labels= or label_strategy='joint' (ig, dlg)"
        )
    head = leaves[heads[-1]]
    assert isinstance(head, nn.Linear) and head.bias is not None
    after = [module for module in leaves[heads[-1] + 1 :] if not isinstance(module, nn.Identity)]
    activation = activation_for(after[0]) if len(after) == 1 else None
    if after and activation is None:
        names = ", ".join(type(module).__name__ for module in after)
        raise FlLeakError(
            f"label recovery needs the last nn.Linear to be followed by at most one element-wise "
            f"activation (identity, tanh, sigmoid, ...); it is followed by {names}"
        )
    position = {id(parameter): k for k, parameter in enumerate(model.parameters())}
    return LastLayer(
        head.weight.detach(),
        head.bias.detach(),
        activation or Identity(),
        gradients[position[id(head.weight)]],
        gradients[position[id(head.bias)]],
    )


def recover_labels(model: nn.Module, gradients: Sequence[Tensor], batch_size: int) -> Tensor:
    """The labels of the batch behind ``gradients``, sorted, as a CPU ``LongTensor``.

    ``gradients`` are aligned with ``model.parameters()`` (the gradient of the batch-mean
    cross-entropy, as for :func:`fl_leak.reconstruct`). Only the last layer is used: its bias
    gradient says which classes are present, its weight gradient gives the batch's mean embedding
    and so each class's mean probability, hence the counts (:mod:`fl_leak.attacks.labels`).
    Exact on untrained networks whose outputs vary little between samples (lenet, flower_cnn:
    batches of 128); where they differ between classes (cnn2_c1, cnn2_c5) from ``B = 64``, and
    as the network trains, some counts miss by one or two (docs/attack.md#labels).

    >>> import torch, torch.nn.functional as F, fl_leak
    >>> model = fl_leak.build_model("lenet", seed=0)
    >>> images, labels = torch.rand(16, 3, 32, 32), torch.arange(16) % 10
    >>> gradients = torch.autograd.grad(F.cross_entropy(model(images), labels),
    ...                                 list(model.parameters()))
    >>> fl_leak.recover_labels(model, gradients, 16).tolist()
    [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 7, 8, 9]
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise FlLeakError(f"batch_size must be a positive integer, got {batch_size!r}")
    gradients = check_gradients(model, gradients)
    return batch_labels(output_layer(model, gradients), batch_size)
