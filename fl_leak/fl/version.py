"""Which fl-leak a process runs, and the check that server and nodes run the same one.

Under Flower's Deployment Engine the code that runs is what each machine has installed: the
ServerApp runs the SuperLink machine's ``fl_leak``, each ClientApp its node's. Different versions
would train, or build the model, differently without any error. So the server sends its version
and source digest in every train (and evaluate) config, and a client whose own differ refuses the
message with :class:`VersionMismatchError`, which names both; the server records that client's
failure with the message.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

import fl_leak
from fl_leak.errors import FlLeakError

PACKAGE_DIR = Path(fl_leak.__file__).resolve().parent
SOURCE_SUFFIXES = (".py", ".yaml", ".npz")
VERSION_KEY = "fl-leak-version"
SOURCE_KEY = "fl-leak-source"


class VersionMismatchError(FlLeakError):
    """A node runs another fl-leak than the server."""


def tree_digest(package_dir: Path) -> str:
    """A hash of every ``.py``, ``.yaml`` and ``.npz`` file under ``package_dir``, by relative
    path and content."""
    digest = hashlib.sha256()
    files = sorted(
        path for path in package_dir.rglob("*") if path.suffix in SOURCE_SUFFIXES and path.is_file()
    )
    for path in files:
        digest.update(path.relative_to(package_dir).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


@lru_cache(maxsize=1)
def source_digest() -> str:
    """The :func:`tree_digest` of this ``fl_leak`` (installed or checked out), once per process:
    changes whenever its code, configs or bundled data change."""
    return tree_digest(PACKAGE_DIR)


def version_config() -> dict[str, str]:
    """What the server adds to the configs it sends: its version and source digest."""
    return {VERSION_KEY: fl_leak.__version__, SOURCE_KEY: source_digest()}


def _named(version: object, source: object) -> str:
    return f"fl-leak {version} (source {str(source)[:12]})"


def check_version(config: Mapping[str, object], partition_id: int) -> None:
    """Refuse a server's message whose fl-leak differs from this node's.

    ``config`` is the message's ConfigRecord; ``VersionMismatchError`` names both versions (and
    source digests), and this node's partition.
    """
    mine = version_config()
    if VERSION_KEY not in config:
        raise VersionMismatchError(
            f"client {partition_id} runs {_named(*mine.values())}; the server sent no fl-leak "
            "version (it runs another app, or an fl-leak that does not check versions)"
        )
    theirs = {key: config.get(key, "") for key in mine}
    if theirs != mine:
        raise VersionMismatchError(
            f"client {partition_id} runs {_named(*mine.values())} but the server runs "
            f"{_named(*theirs.values())}: install the same fl-leak on the server and every node"
        )
