"""Spend records as database rows: one column list for every store, in field order."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from sidecar.types import SpendRecord

COLUMNS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(SpendRecord))


def record_row(record: SpendRecord) -> tuple[Any, ...]:
    return tuple(getattr(record, column) for column in COLUMNS)


def row_record(row: Sequence[Any]) -> SpendRecord:
    return SpendRecord(*row)
