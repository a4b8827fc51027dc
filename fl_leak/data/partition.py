"""Split a data set's indices among federated clients: IID or Dirichlet non-IID over labels.

Written here rather than taken from ``flwr-datasets``: its partitioners operate on HuggingFace
``datasets.Dataset`` objects, so using them would pull in ``datasets`` and its dependencies
(pyarrow, huggingface_hub, aiohttp, ...) just to split an index array that is already in memory.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

Scheme = Callable[[np.ndarray, int, float, np.random.Generator], list[np.ndarray]]


def _iid(
    labels: np.ndarray, num_partitions: int, alpha: float, rng: np.random.Generator
) -> list[np.ndarray]:
    return np.array_split(rng.permutation(len(labels)), num_partitions)


def _dirichlet(
    labels: np.ndarray, num_partitions: int, alpha: float, rng: np.random.Generator
) -> list[np.ndarray]:
    if alpha <= 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    parts: list[list[int]] = [[] for _ in range(num_partitions)]
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        shares = rng.dirichlet(np.full(num_partitions, alpha))
        cuts = (np.cumsum(shares)[:-1] * len(members)).astype(int)
        for part, chunk in zip(parts, np.split(members, cuts), strict=True):
            part.extend(chunk.tolist())
    # A small alpha can leave a partition empty: give it one sample from the largest one.
    for part in parts:
        if not part:
            donor = max(parts, key=len)
            part.append(donor.pop(int(rng.integers(len(donor)))))
    return [np.asarray(part, dtype=np.int64) for part in parts]


SCHEMES: dict[str, Scheme] = {"iid": _iid, "dirichlet": _dirichlet}


def partition_indices(
    labels: npt.ArrayLike,
    num_partitions: int,
    scheme: str = "iid",
    alpha: float = 0.5,
    seed: int = 0,
) -> list[np.ndarray]:
    """Split sample indices into ``num_partitions`` non-empty, disjoint, covering partitions.

    Parameters
    ----------
    labels : array-like of int, shape (N,)
        Label of each sample.
    num_partitions : int
        Number of partitions (clients), between 1 and N.
    scheme : {"iid", "dirichlet"}
        ``iid``: shuffle and split into sizes that differ by at most one. ``dirichlet``: for each
        class, split its samples among the partitions in proportions drawn from
        ``Dirichlet(alpha, ..., alpha)`` (Hsu et al., 2019); the smaller ``alpha``, the more each
        partition is dominated by few classes. A partition left empty receives one sample from
        the largest partition.
    alpha : float
        Dirichlet concentration; used by ``dirichlet`` only.
    seed : int
        Seed of the random generator; the result is a function of the arguments only.

    Returns
    -------
    list of np.ndarray
        Sorted int64 indices of each partition.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {labels.shape}")
    if scheme not in SCHEMES:
        raise ValueError(
            f"unknown partition scheme {scheme!r}; known schemes: {', '.join(SCHEMES)}"
        )
    if not 1 <= num_partitions <= len(labels):
        raise ValueError(
            f"cannot split {len(labels)} samples into {num_partitions} non-empty partitions"
        )
    parts = SCHEMES[scheme](labels, num_partitions, alpha, np.random.default_rng(seed))
    return [np.sort(part).astype(np.int64) for part in parts]
