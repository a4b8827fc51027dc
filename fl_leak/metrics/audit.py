"""The security audit: how solvable each layer's system is, and the paper's index.

For every weight layer below the last, the audit builds the stacked system ``[A ; K_D]`` at a
probe input and reports its size, its numerical rank and deficiency, and its condition number.
The probe is a seeded uniform random input unless real ``inputs`` are given. For smooth
activations and leaky ReLU the rank is generic in the data, so the random probe stands for any
input; a ReLU layer (slope 0) gives forward rows on its active units only, so its rank depends on
the data's active set, and a random probe (independent pixels, about half the units active) can
call full rank a network that real, smooth images leave deficient: the report says so in its
``notes``, and auditing at the data itself (``inputs=``) gives the rank an attack faces.

The last (fully connected) layer gets a row too: its ``B`` inputs are read from the row space of
its weight gradient ``G = D^T X``, so its deficiency is ``(B - rank G) * features`` (more samples
than classes leave it undetermined) and its condition is ``s_1 / s_B`` of ``G``.

The index of Chen & Campbell weighs deficiencies toward the input::

    index = - sum_i round(def_i * (L - 1 - i) / (L - 1))

over the layers below the last fully connected one (``L`` weight layers, ``i = 0`` the input
layer). It is 0 when every layer is uniquely solvable and more negative the more unknowns stay
undetermined.

Ranks are exact (numpy's default tolerance ``s_max * max(M, N) * eps`` on float64: certified
from a Cholesky factorisation of the sparse matrix's Gram matrix where it can, else from an
inertia count or the Gram matrix's eigenvalues with the candidate null space checked on the matrix
itself, else from the singular values of the dense matrix;
:mod:`fl_leak.attacks.linear.spectrum`, docs/audit.md) while ``min(M, N) <= max_dense``; above
that the audit reports the structural lower bound on the deficiency (unknowns minus independent
rows, and unknowns no row touches), marked ``method="bound"``, with no condition number.

Uniquely solvable is not recoverable: a direction whose singular value is ``10^-6`` of the
largest amplifies the update's rounding (float32: about ``10^-7``) to the whole image. Each row
therefore also counts its singular values below ``rtol`` times the largest, the
``numerical_deficiency`` (exact where dense; above ``max_dense`` estimated by a
damped solve on a random probe, :func:`~fl_leak.attacks.linear.solver.weak_directions`, where
the structural bound finds no deficiency, and the bound, a lower bound, where it does). The
default ``rtol = 1e-4`` is where float32 updates stop resolving a direction to about 60 dB (a
relative rounding of ``10^-7`` amplified ``10^4`` times). ``full_rank`` requires both counts to be
0 on every row. The systems are those the attack solves, rows equilibrated per output channel.

At a data probe (``inputs=``), a (leaky) ReLU unit whose output lies within ``kink_tol``
(default ``1e-7``, float32's precision) times its layer's largest output of the kink is counted
in ``near_kink``, and ``full_rank`` requires none: an
update's rounding decides on which side such a unit is reconstructed, and a wrong side changes
its derivative (by ``1 / slope`` for leaky ReLU) in the gradient rows of the layer below. Measured
on ``lenet`` (LeakyReLU 0.01): one unit at ``2.4e-8`` of its layer's largest output turned an exact
reconstruction into 41.8 dB from a float32 update; from a float64 one at LSMR tolerance ``1e-14``
it came out exact. A random probe's values near a kink are its own, so it counts none.

``device`` moves the dense linear algebra (factorisations, eigenvalues, SVDs) to a GPU;
``noise_levels`` adds the predicted PSNR of the noise-aware linear attack under Gaussian update
noise (:mod:`fl_leak.metrics.noise_prediction`, batch 1) to the report.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fl_leak.attacks.linear.activations import KINK
from fl_leak.attacks.linear.chain import Block, parse_chain
from fl_leak.attacks.linear.last_layer import numerical_rank
from fl_leak.attacks.linear.matrix import layer_spectrum
from fl_leak.attacks.linear.solver import weak_directions
from fl_leak.attacks.linear.system import LayerSystem
from fl_leak.errors import FlLeakError
from fl_leak.metrics.image_statistics import ImageStatistics
from fl_leak.options import torch_device
from fl_leak.threads import DEFAULT_THREADS, torch_threads


@dataclass
class AuditLayer:
    """One layer's system: its size, rank, deficiency and conditioning."""

    index: int
    path: str
    kind: str
    activation: str
    unknowns: int
    forward_equations: int
    gradient_equations: int
    padding: int  # zero entries a padded-input formulation would add as unknowns
    rank: int
    deficiency: int
    condition: float
    # "svd": exact numerical rank (numpy's, certified or from the singular values); "bound":
    # structural lower bound on the deficiency
    method: str
    seconds: float
    # singular values below rtol x the largest (None where not computed: rtol=0)
    numerical_deficiency: int | None = None
    # (leaky) ReLU outputs within kink_tol x the layer's largest of the kink (module docstring)
    near_kink: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class AuditReport:
    """Result of :func:`audit`: per-layer rows (input layer first) and the index."""

    input_shape: tuple[int, ...]
    batch_size: int
    layers: list[AuditLayer] = field(default_factory=list)
    index: int = 0
    probe: str = "random"  # "random" (seeded uniform input) or "data" (the given inputs)
    notes: list[str] = field(default_factory=list)
    rtol: float = 0.0
    # relative update noise sigma -> predicted PSNR (dB) of the noise-aware linear attack
    noise_psnr: dict[float, float] = field(default_factory=dict)

    @property
    def full_rank(self) -> bool:
        """True when every row is uniquely solvable, with no singular value below ``rtol`` times
        its largest and no (leaky) ReLU output within ``kink_tol`` of the kink."""
        return all(
            layer.deficiency == 0 and not layer.numerical_deficiency and not layer.near_kink
            for layer in self.layers
        )

    def table(self) -> str:
        """A plain-text table of the layers and the index."""
        header = (
            f"{'layer':>5} {'path':<12} {'kind':<7} {'activation':<16} {'unknowns':>9} "
            f"{'fwd eq':>8} {'grad eq':>8} {'pad':>6} {'rank':>7} {'deficiency':>10} "
            f"{'condition':>10} {'method':>6} {'numerical':>9} {'kink':>5}"
        )
        rows = [header, "-" * len(header)]
        for layer in self.layers:
            condition = "-" if math.isnan(layer.condition) else f"{layer.condition:.2e}"
            rows.append(
                f"{layer.index:>5} {layer.path:<12.12} {layer.kind:<7} {layer.activation:<16.16} "
                f"{layer.unknowns:>9} {layer.forward_equations:>8} {layer.gradient_equations:>8} "
                f"{layer.padding:>6} {layer.rank:>7} {layer.deficiency:>10} {condition:>10} "
                f"{layer.method:>6} {_count(layer.numerical_deficiency):>9} {layer.near_kink:>5}"
            )
        rows.append(f"index (batch size {self.batch_size}, {self.probe} probe): {self.index}")
        if self.rtol > 0:
            rows.append(
                f"numerical: singular values below {self.rtol:.0e} x the largest "
                f"(full rank, with the kink count: {self.full_rank})"
            )
        if self.noise_psnr:
            predicted = ", ".join(f"{s:g}: {db:.1f} dB" for s, db in self.noise_psnr.items())
            rows.append(f"predicted PSNR under Gaussian update noise (sigma: PSNR): {predicted}")
        rows += [f"note: {note}" for note in self.notes]
        return "\n".join(rows)


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def security_index(deficiencies: Sequence[int]) -> int:
    """The paper's index from the deficiencies of layers ``0 .. L-2`` (input layer first)."""
    weight_layers = len(deficiencies) + 1
    if weight_layers == 1:
        return 0
    return -sum(
        round(deficiency * (weight_layers - 1 - i) / (weight_layers - 1))
        for i, deficiency in enumerate(deficiencies)
    )


@dataclass
class LayerProbe:
    """Blocks, their systems at a probe input (below the last layer), and each block's input."""

    blocks: list[Block]
    systems: list[LayerSystem]
    inputs: list[Tensor]


def probe_layers(
    model: nn.Module,
    input_shape: Sequence[int],
    batch_size: int = 1,
    seed: int = 0,
    scaled: bool = False,
    inputs: Tensor | None = None,
    labels: Tensor | None = None,
) -> LayerProbe:
    """Every layer's system (below the last) at a probe input and labels.

    Without ``inputs`` the probe is a seeded random input, uniform in [0, 1]; given ``inputs``
    (``(batch_size, *input_shape)``) the systems are those of that data. Labels not given are
    random, distinct while ``batch_size`` allows. Gradients and per-layer output gradients come
    from autograd on the model's own float64 copy.
    """
    probe = parse_chain(model, [torch.zeros_like(p) for p in model.parameters()], input_shape)
    generator = torch.Generator().manual_seed(seed)
    classes = probe.last.operator.out_channels
    if inputs is None:
        inputs = torch.rand(batch_size, *input_shape, generator=generator, dtype=torch.float64)
    else:
        inputs = torch.as_tensor(inputs).detach().to(dtype=torch.float64, device="cpu")
        if tuple(inputs.shape) != (batch_size, *input_shape):
            raise FlLeakError(
                f"probe inputs of shape {tuple(inputs.shape)}, expected "
                f"{(batch_size, *tuple(input_shape))}"
            )
    if labels is None:
        labels = (
            torch.randperm(classes, generator=generator)[:batch_size]
            if batch_size <= classes
            else torch.randint(classes, (batch_size,), generator=generator)
        )
    else:
        labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1).cpu()
        if labels.numel() != batch_size:
            raise FlLeakError(f"got {labels.numel()} probe labels for batch_size={batch_size}")
    reference = probe.module
    loss = F.cross_entropy(reference(inputs), labels)
    gradients = torch.autograd.grad(loss, list(reference.parameters()))
    chain = parse_chain(reference, gradients, input_shape)
    x = inputs.clone().requires_grad_(True)
    activations, pre_activations = [x], []
    for block in chain.blocks:
        z = block.operator.add_bias(block.operator.forward(activations[-1]))
        z.retain_grad()
        pre_activations.append(z)
        activations.append(block.output(z))
    F.cross_entropy(activations[-1], labels).backward()
    systems = []
    for index, block in enumerate(chain.blocks[:-1]):
        z = pre_activations[index]
        bias = block.operator.add_bias(z.new_zeros(1, *block.operator.out_shape))
        assert z.grad is not None
        systems.append(
            LayerSystem(
                operator=block.operator,
                output_gradient=z.grad.detach(),
                observed_gradient=block.weight_gradient,
                target=(z - bias).detach(),
                valid=block.valid_rows(z.detach()),
                scaled=scaled,
            )
        )
    return LayerProbe(chain.blocks, systems, [x.detach() for x in activations[:-1]])


def _last_layer_row(block: Block, batch_size: int, rtol: float) -> AuditLayer:
    """The last layer: ``B`` inputs from the row space of its weight gradient ``G = D^T X``."""
    start = time.perf_counter()
    gradient = block.weight_gradient
    classes, features = gradient.shape
    singular = torch.linalg.svdvals(gradient)
    rank = min(batch_size, numerical_rank(singular, (classes, features)))
    strong = min(batch_size, int((singular > rtol * singular[0]).sum()))
    condition = float(singular[0] / singular[rank - 1]) if rank else math.inf
    return AuditLayer(
        index=block.index,
        path=block.path,
        kind=block.kind,
        activation=block.activation.name,
        unknowns=batch_size * features,
        forward_equations=0,
        gradient_equations=gradient.numel(),
        padding=0,
        rank=rank * features,
        deficiency=(batch_size - rank) * features,
        condition=condition,
        method="svd",
        seconds=time.perf_counter() - start,
        numerical_deficiency=(batch_size - strong) * features if rtol > 0 else None,
    )


def audit(
    model: nn.Module,
    input_shape: Sequence[int] = (3, 32, 32),
    batch_size: int = 1,
    seed: int = 0,
    max_dense: int = 6000,
    inputs: Tensor | None = None,
    labels: Tensor | None = None,
    rtol: float = 1e-4,
    kink_tol: float = KINK,
    threads: int | None = DEFAULT_THREADS,
    device: str | torch.device = "cpu",
    noise_levels: Sequence[float] = (),
    noise_images: Tensor | None = None,
) -> AuditReport:
    """Audit ``model``: per-layer unknowns, equations, rank, deficiency, condition, and the index.

    Parameters
    ----------
    model
        A chain of supported layers (as for the linear attack); its weights are used as they are.
    input_shape
        Shape of one input.
    batch_size
        Number of samples behind one update.
    seed
        Seed of the random input at which the systems are built.
    max_dense
        Largest ``min(rows, unknowns)`` for which the rank is computed exactly by SVD.
    inputs, labels
        Real data to probe at (``(batch_size, *input_shape)``, and its labels; random labels when
        not given) instead of the seeded random input. The rank of a ReLU layer depends on which
        units the data leaves active, so for ReLU networks only a probe at the data itself tells
        whether that data is recoverable.
    rtol
        Singular values at most ``rtol`` times a row's largest count in its
        ``numerical_deficiency`` (module docstring); 0 skips that count (it costs a damped
        solve per layer above ``max_dense``).
    kink_tol
        At a data probe, (leaky) ReLU outputs within ``kink_tol`` times their layer's largest of
        the kink count in ``near_kink`` (module docstring); 0 skips the count.
    threads
        Torch intra-op threads for the whole audit (probes, solves, SVDs; see
        :mod:`fl_leak.threads`); ``None`` keeps torch's setting.
    device
        Where the dense linear algebra runs (the Gram matrices' factorisations and eigenvalues,
        the SVDs; docs/audit.md): ``"cpu"`` (default) or an available ``"cuda"`` device, in
        float64. The probes' autograd, the sparse matrices, Lanczos and the noise prediction stay
        on the CPU. A device that is not available is refused before any work.
    noise_levels, noise_images
        Relative update noise levels ``sigma`` (Gaussian, times each gradient tensor's RMS) at
        which to predict the noise-aware linear attack's PSNR
        (:mod:`fl_leak.metrics.noise_prediction`; batch 1 only), into ``noise_psnr``. The data's
        statistics come from ``noise_images`` (``(N, *input_shape)`` in ``[0, 1]``), else
        ``inputs``. The prediction costs one dense SVD per layer.
    """
    resolved = audit_device(device)
    statistics = None
    if noise_levels:
        statistics = _noise_statistics(noise_levels, batch_size, noise_images, inputs)
    with torch_threads(threads):
        report = _audit(
            model,
            input_shape,
            batch_size,
            seed,
            max_dense,
            inputs,
            labels,
            rtol,
            kink_tol,
            resolved,
        )
        if statistics is not None:
            # imported here: noise_prediction builds on this module's probes
            from fl_leak.metrics.noise_prediction import predicted_psnrs

            report.noise_psnr = predicted_psnrs(model, input_shape, noise_levels, statistics, seed)
        return report


def audit_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch device the audit can compute on in float64; ``FlLeakError`` when it
    is not one or not available here."""
    resolved = torch_device(device)
    if resolved.type == "mps":
        raise FlLeakError(f"device={device!r}: the audit computes in float64, which mps lacks")
    try:
        torch.empty(1, dtype=torch.float64, device=resolved)
    except (RuntimeError, AssertionError) as error:
        raise FlLeakError(f"device={device!r} is not available: {error}") from None
    return resolved


def _noise_statistics(
    levels: Sequence[float], batch_size: int, images: Tensor | None, inputs: Tensor | None
) -> list[ImageStatistics]:
    """Each image's statistics for the noise prediction, the settings checked first."""
    if batch_size != 1:
        raise FlLeakError(f"noise_levels: the noise prediction is for batch 1, not {batch_size}")
    if not all(math.isfinite(level) and level > 0 for level in levels):
        raise FlLeakError(f"noise_levels={list(levels)} must be positive and finite")
    images = inputs if images is None else images
    if images is None:
        raise FlLeakError("noise_levels needs images for the data's statistics: noise_images=")
    return ImageStatistics.each(torch.as_tensor(images))


def _audit(
    model: nn.Module,
    input_shape: Sequence[int],
    batch_size: int,
    seed: int,
    max_dense: int,
    inputs: Tensor | None,
    labels: Tensor | None,
    rtol: float,
    kink_tol: float,
    device: torch.device,
) -> AuditReport:
    """:func:`audit`'s work, inside its thread setting."""
    probe = probe_layers(
        model, input_shape, batch_size, seed, scaled=True, inputs=inputs, labels=labels
    )
    blocks, systems = probe.blocks, probe.systems
    report = AuditReport(
        tuple(input_shape), batch_size, probe="random" if inputs is None else "data", rtol=rtol
    )
    for block, system in zip(blocks, systems, strict=False):
        start = time.perf_counter()
        weak = None
        if min(system.shape) <= max_dense:
            exact = layer_spectrum(system, rtol, device)
            rank, condition, weak = exact.rank, exact.condition, exact.weak
            deficiency, method = system.num_unknowns - rank, "svd"
        else:
            deficiency, method = system.deficiency_bound(), "bound"
            rank, condition = system.num_unknowns - deficiency, math.nan
            if rtol > 0:  # a layer the bound finds deficient is so at any tolerance
                weak = deficiency or weak_directions(system, rtol, seed=seed)
        report.layers.append(
            AuditLayer(
                index=block.index,
                path=block.path,
                kind=block.kind,
                activation=block.activation.name,
                unknowns=system.num_unknowns,
                forward_equations=system.forward_equations,
                gradient_equations=system.num_gradient_rows,
                padding=batch_size * block.operator.padding_entries(),
                rank=rank,
                deficiency=deficiency,
                condition=condition,
                method=method,
                seconds=time.perf_counter() - start,
                numerical_deficiency=weak if rtol > 0 else None,
            )
        )
    if inputs is not None:  # a random probe's values near a kink are its own, not the model's
        for layer, block, output in zip(report.layers, blocks, probe.inputs[1:], strict=False):
            layer.near_kink = block.activation.near_kink(output, kink_tol)
    report.layers.append(_last_layer_row(blocks[-1], batch_size, rtol))
    report.index = security_index([layer.deficiency for layer in report.layers[:-1]])
    relu = [
        f"{layer.index} ({layer.forward_equations} of {system.num_forward_rows} units active)"
        for layer, system in zip(report.layers[:-1], systems, strict=True)
        if layer.activation == "relu"
    ]
    if relu and inputs is None:
        report.notes.append(
            "ReLU layers " + ", ".join(relu) + ": forward rows exist on active units only, so "
            "the rank depends on the data; this random probe (independent uniform pixels) can "
            "activate more units than real images do; audit the data itself (inputs=...) before "
            "relying on full rank"
        )
    elif relu:
        report.notes.append(
            "ReLU layers " + ", ".join(relu) + ": rank at the given inputs' active set"
        )
    return report
