"""Torch's intra-op thread count during an attack or an audit: the ``threads`` option.

Every attack (``fl_leak.reconstruct(..., threads=...)``, so ``linear``, ``hybrid``, ``ig`` and
``dlg``) and :func:`fl_leak.audit` run their whole call inside :func:`torch_threads`: with
``threads`` torch intra-op threads (default :data:`DEFAULT_THREADS`, one), and the caller's count
restored afterwards, also when the call raises. Nested code (LSMR solves, the hybrid correction,
the optimisation loops, the audit's probes and SVDs) sets nothing of its own.

Why one thread: the work is many operations on small tensors (32x32 convolutions, their double
backward, LSMR's matrix-free products), where a pool of threads spends its time synchronising, and
on a machine whose cores are busy with other work each synchronisation waits for a core. Measured
on 2 cores with another process busy: ``hybrid`` on cnn3_c1 (batch 1, 1000 correction iterations)
6.1 s on one thread against 50.9 s on torch's default of two; ``benchmarks/bench_threads.py``
times every attack and the audit both ways. ``threads=None`` leaves torch's setting as it is (large
inputs, e.g. 224x224, or a quiet machine with many cores, may gain from more threads).

The count is process-wide (``torch.set_num_threads``): calls running concurrently in threads of
one process share it. Where LSMR runs, numpy's BLAS is held to one thread as well, whatever
``threads`` says (:func:`fl_leak.attacks.linear.solver.solve_layer`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from fl_leak.errors import FlLeakError

DEFAULT_THREADS = 1


def check_threads(count: object) -> int | None:
    """``count`` if it is a positive integer or ``None``; otherwise raise ``FlLeakError``."""
    if count is None:
        return None
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise FlLeakError(f"threads must be a positive integer or None, got {count!r}")
    return count


@contextmanager
def torch_threads(count: int | None = DEFAULT_THREADS) -> Iterator[None]:
    """Run the block with ``count`` torch intra-op threads (``None``: as they are), then restore.

    >>> import torch
    >>> before = torch.get_num_threads()
    >>> with torch_threads(1):
    ...     torch.get_num_threads()
    1
    >>> torch.get_num_threads() == before
    True
    """
    count = check_threads(count)
    previous = torch.get_num_threads()
    if count is not None and count != previous:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)
