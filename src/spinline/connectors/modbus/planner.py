"""Pure coalescing planner: turn a device's points into as few block reads as the protocol allows.

Points are sorted per table by address and merged into one read while the block stays within
the protocol's limit (125 registers for holding/input registers, 2000 bits for coils/discrete
inputs) and the hole between two points is at most ``max_gap`` registers (bits). Reading a few
unused registers is much cheaper than another round trip, but a big hole could cross registers
the device refuses to serve, so the gap is small and configurable.

The result is a list of ``BlockRead``; each carries the indices (into the input list) of the
points it serves and the offsets where they sit, ready for ``codec.BlockDecoder``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from spinline.core.site import DataType, ModbusAddress, ModbusTable

from .codec import width

#: Protocol limits per request (Modbus application protocol v1.1b3, function codes 1-4).
MAX_REGISTERS = 125
MAX_BITS = 2000
BIT_TABLES = (ModbusTable.COIL, ModbusTable.DISCRETE)


@dataclass(frozen=True, slots=True)
class PlanItem:
    """A point to read: its Modbus address and data type."""

    address: ModbusAddress
    dtype: DataType

    @property
    def span(self) -> int:
        return 1 if self.address.table in BIT_TABLES else width(self.dtype)


@dataclass(frozen=True, slots=True)
class BlockRead:
    table: ModbusTable
    start: int
    count: int
    #: Indices into the planned items, and each one's offset from ``start``.
    items: tuple[int, ...]
    offsets: tuple[int, ...]


def plan(items: Sequence[PlanItem], *, max_gap: int = 8, max_registers: int = MAX_REGISTERS,
         max_bits: int = MAX_BITS) -> list[BlockRead]:
    """Coalesce ``items`` into block reads (deterministic: by table, then address)."""
    if max_gap < 0:
        raise ValueError("max_gap must be >= 0")
    blocks: list[BlockRead] = []
    order = sorted(range(len(items)), key=lambda i: (items[i].address.table.value, items[i].address.reg))
    cur_table: ModbusTable | None = None
    start = end = 0
    members: list[int] = []

    def flush() -> None:
        if members and cur_table is not None:
            blocks.append(BlockRead(cur_table, start, end - start, tuple(members),
                                    tuple(items[i].address.reg - start for i in members)))

    for i in order:
        it = items[i]
        table, reg, span = it.address.table, it.address.reg, it.span
        limit = max_bits if table in BIT_TABLES else max_registers
        if span > limit:
            raise ValueError(f"a {it.dtype.value} spans {span} registers, more than one read allows ({limit})")
        if reg + span > 65536:
            raise ValueError(f"{table.value} {reg} + {span} runs past the 65536-entry address space")
        if (table == cur_table and members and reg - end <= max_gap
                and max(end, reg + span) - start <= limit):
            end = max(end, reg + span)
            members.append(i)
            continue
        flush()
        cur_table, start, end, members = table, reg, reg + span, [i]
    flush()
    return blocks


def requests_per_point(items: Sequence[PlanItem]) -> int:
    """Requests a gateway that reads one point per request would make (the baseline)."""
    return len(items)
