"""Progress bars for long work a person waits on: shown on a terminal, silent otherwise."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


def progress(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """``items``, with a bar (count, rate, ETA) on stderr when it is a terminal."""
    yield from tqdm(
        items,
        desc=description,
        total=total,
        unit="update",
        disable=None,  # None: shown only on a terminal, so logs and pipes stay clean
        leave=False,
        file=sys.stderr,
        dynamic_ncols=True,
    )
