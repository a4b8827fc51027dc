"""Batch normalisation in evaluation mode: a per-channel affine map, folded into the weight layer.

In evaluation mode ``BatchNorm`` maps channel ``c`` to ``gamma_c (z - mu_c) / sqrt(var_c + eps) +
beta_c`` with its running statistics: ``scale_c z + shift_c``. Right after a weight layer
``z = W x + b`` it folds into it: ``W' = scale W``, ``b' = scale b + shift``, and the gradients
the server observes fold too (``dL/dW' = dL/dW / scale``; the bias gradient is ``dL/dbeta``, or
``dL/db / scale``). In training mode it normalises with the statistics of the batch itself, which
couple the samples (and, in a convolution, all positions of a channel): not a fixed map, refused.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fl_leak.attacks.linear.layers.base import ChannelAffine
from fl_leak.attacks.linear.layers.registry import register_channel_affine
from fl_leak.errors import UnsupportedLayerError

TRAINING_REASON = (
    "batch normalisation with batch statistics (training mode, or track_running_stats=False) "
    "normalises each channel by the mean and variance of the batch being reconstructed, which "
    "couples the samples and is not a fixed affine map; the linear attack and the audit take it "
    "in evaluation mode only (model.eval(), running statistics)"
)


class BatchNormAffine(ChannelAffine):
    """``nn.BatchNorm1d`` / ``nn.BatchNorm2d`` in evaluation mode with running statistics."""

    def __init__(self, module: nn.modules.batchnorm._BatchNorm) -> None:
        if module.training or module.running_mean is None or module.running_var is None:
            raise UnsupportedLayerError("", module, TRAINING_REASON)
        self.module = module

    def scale_and_shift(self) -> tuple[Tensor, Tensor]:
        module = self.module
        assert module.running_mean is not None and module.running_var is not None
        mean = module.running_mean.detach().double().cpu()
        std = torch.sqrt(module.running_var.detach().double().cpu() + module.eps)
        gamma = module.weight.detach().double().cpu() if module.weight is not None else 1.0
        beta = module.bias.detach().double().cpu() if module.bias is not None else 0.0
        scale = gamma / std * torch.ones_like(mean)
        if bool((scale == 0).any()):
            raise UnsupportedLayerError(
                "", module, "a channel with weight (gamma) 0 carries no signal to fold"
            )
        return scale, beta - mean * scale


@register_channel_affine(nn.BatchNorm1d)
@register_channel_affine(nn.BatchNorm2d)
def _batchnorm(module: nn.Module) -> ChannelAffine:
    assert isinstance(module, nn.modules.batchnorm._BatchNorm)
    return BatchNormAffine(module)
