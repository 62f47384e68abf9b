from __future__ import annotations

import pytest

from spinline.connectors.modbus.planner import MAX_BITS, MAX_REGISTERS, PlanItem, plan
from spinline.core.site import DataType, ModbusAddress, ModbusTable, load_site


def item(reg: int, dtype: DataType = DataType.FLOAT32, table: ModbusTable = ModbusTable.HOLDING) -> PlanItem:
    return PlanItem(ModbusAddress(table=table, register=reg), dtype)


def test_contiguous_points_make_one_read_and_offsets_are_right() -> None:
    blocks = plan([item(4), item(0), item(2)])
    assert len(blocks) == 1
    b = blocks[0]
    assert (b.start, b.count) == (0, 6)
    assert dict(zip(b.items, b.offsets, strict=True)) == {1: 0, 2: 2, 0: 4}


def test_small_gaps_are_bridged_big_ones_split() -> None:
    assert len(plan([item(0), item(10)], max_gap=8)) == 1       # hole of 8 registers
    assert len(plan([item(0), item(11)], max_gap=8)) == 2       # hole of 9
    assert len(plan([item(0), item(3)], max_gap=0)) == 2


def test_register_limit_125() -> None:
    items = [item(r) for r in range(0, 400, 2)]
    blocks = plan(items)
    assert all(b.count <= MAX_REGISTERS for b in blocks)
    assert len(blocks) == 4
    assert sorted(i for b in blocks for i in b.items) == list(range(len(items)))
    # a 64-bit value never straddles two reads
    big = plan([item(r, DataType.FLOAT64) for r in range(0, 200, 4)])
    assert all(b.count <= MAX_REGISTERS and b.count % 4 == 0 for b in big)


def test_bit_tables_limit_2000_and_tables_never_mix() -> None:
    coils = [item(r, DataType.BOOL, ModbusTable.COIL) for r in range(0, 4500)]
    blocks = plan(coils)
    assert [b.count for b in blocks] == [MAX_BITS, MAX_BITS, 500]
    mixed = plan([item(0, DataType.UINT16, ModbusTable.INPUT), item(1, DataType.UINT16),
                  item(0, DataType.BOOL, ModbusTable.DISCRETE)])
    assert sorted(b.table.value for b in mixed) == ["discrete", "holding", "input"]


def test_invalid_inputs() -> None:
    with pytest.raises(ValueError):
        plan([item(0)], max_gap=-1)
    with pytest.raises(ValueError):
        plan([item(65535)])  # float32 would run past the address space


def test_example_mill_needs_ten_times_fewer_requests(mill_yaml) -> None:
    site = load_site(mill_yaml)
    pts = [p for p in site.points("mill-a") if p.point.modbus is not None and p.machine.link is not None
           and p.machine.link.protocol == "modbus"]
    per_machine: dict[str, list[PlanItem]] = {}
    for p in pts:
        per_machine.setdefault(p.machine.id, []).append(PlanItem(p.point.modbus, p.point.dtype))
    requests = sum(len(plan(v)) for v in per_machine.values())
    assert len(pts) == 216
    assert requests == len(per_machine) == 16
    assert len(pts) / requests >= 10
