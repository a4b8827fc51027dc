"""Typed reads of Flower records: each narrows Flower's union of value types, naming the key.

A record's values may be of any type Flower allows (arrays, numbers, strings, bytes, lists of
them); these helpers return the one type the reader expects and raise ``TypeError`` naming the
key when a peer sent something else.
"""

from __future__ import annotations

from collections.abc import Mapping

from flwr.app import ArrayRecord, ConfigRecord, RecordDict


def _refuse(key: str, value: object, expected: str) -> TypeError:
    return TypeError(f"record value {key!r} is a {type(value).__name__}, expected {expected}")


def record_int(record: Mapping[str, object], key: str) -> int:
    """``record[key]`` as an int (an integral number)."""
    value = record[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise _refuse(key, value, "an integer")
    return int(value)


def record_float(record: Mapping[str, object], key: str) -> float:
    """``record[key]`` as a float (any number)."""
    value = record[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _refuse(key, value, "a number")
    return float(value)


def record_bytes(record: Mapping[str, object], key: str) -> bytes:
    """``record[key]`` as bytes."""
    value = record[key]
    if not isinstance(value, bytes):
        raise _refuse(key, value, "bytes")
    return value


def array_record(content: RecordDict, key: str) -> ArrayRecord:
    """The ArrayRecord stored under ``key``."""
    record = content[key]
    if not isinstance(record, ArrayRecord):
        raise _refuse(key, record, "an ArrayRecord")
    return record


def config_record(content: RecordDict, key: str) -> ConfigRecord:
    """The ConfigRecord stored under ``key``."""
    record = content[key]
    if not isinstance(record, ConfigRecord):
        raise _refuse(key, record, "a ConfigRecord")
    return record
