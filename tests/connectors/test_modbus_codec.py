from __future__ import annotations

import itertools
import math
import struct

import numpy as np
import pytest

from spinline.connectors.modbus.codec import BlockDecoder, RegisterField, decode, decode_bits, encode
from spinline.core.errors import DecodeError
from spinline.core.site import DataType

ORDERS = list(itertools.product(["big", "little"], ["big", "little"]))
SAMPLES = {
    DataType.INT16: [-32768, -1, 0, 1, 32767], DataType.UINT16: [0, 1, 65535],
    DataType.INT32: [-(2**31), -123456, 0, 2**31 - 1], DataType.UINT32: [0, 4294967295, 123456789],
    DataType.INT64: [-(2**53), -5, 0, 2**53], DataType.UINT64: [0, 2**53],
    DataType.FLOAT32: [0.0, -1.5, 3.25, 1e10, -1e-3], DataType.FLOAT64: [0.0, math.pi, -1e300, 1e-300],
    DataType.BOOL: [0.0, 1.0],
}


def test_known_layouts_of_float32_one() -> None:
    # 1.0f = 0x3F800000: bytes A=3F B=80 C=00 D=00
    assert encode(1.0, DataType.FLOAT32) == [0x3F80, 0x0000]                                        # ABCD
    assert encode(1.0, DataType.FLOAT32, word_order="little") == [0x0000, 0x3F80]                   # CDAB
    assert encode(1.0, DataType.FLOAT32, byte_order="little") == [0x803F, 0x0000]                   # BADC
    assert encode(1.0, DataType.FLOAT32, byte_order="little", word_order="little") == [0x0000, 0x803F]  # DCBA


def test_independent_struct_packing_matches() -> None:
    raw = struct.pack(">i", -123456)
    regs = [int.from_bytes(raw[0:2], "big"), int.from_bytes(raw[2:4], "big")]
    assert decode(regs, DataType.INT32) == -123456
    assert decode(regs[::-1], DataType.INT32, word_order="little") == -123456
    raw64 = struct.pack(">d", 2.5)
    regs64 = [int.from_bytes(raw64[i:i + 2], "big") for i in range(0, 8, 2)]
    assert decode(regs64, DataType.FLOAT64) == 2.5
    assert decode(regs64[::-1], DataType.FLOAT64, word_order="little") == 2.5


@pytest.mark.parametrize("dtype", list(SAMPLES))
@pytest.mark.parametrize(("bo", "wo"), ORDERS)
def test_roundtrip_every_dtype_and_order(dtype: DataType, bo: str, wo: str) -> None:
    for v in SAMPLES[dtype]:
        regs = encode(v, dtype, byte_order=bo, word_order=wo)
        assert all(0 <= r <= 0xFFFF for r in regs)
        got = decode(regs, dtype, byte_order=bo, word_order=wo)
        if dtype == DataType.FLOAT32:
            assert got == pytest.approx(v, rel=1e-6)
        else:
            assert got == v


def test_scale_and_offset() -> None:
    regs = encode(12.34, DataType.UINT16, scale=0.01)
    assert regs == [1234]
    assert decode(regs, DataType.UINT16, scale=0.01) == pytest.approx(12.34)
    assert decode(encode(-40.0, DataType.INT16, scale=0.1, offset=-50.0), DataType.INT16, scale=0.1,
                  offset=-50.0) == pytest.approx(-40.0)


def test_wrong_register_count_is_a_decode_error() -> None:
    with pytest.raises(DecodeError):
        decode([1], DataType.FLOAT32)


def test_block_decoder_matches_scalar_reference_for_a_mixed_block() -> None:
    rng = np.random.default_rng(3)
    fields, regs, expect = [], [0] * 125, []
    off = 0
    combos = [(d, bo, wo) for d in SAMPLES for bo, wo in ORDERS]
    for d, bo, wo in combos * 2:
        w = {DataType.BOOL: 1, DataType.INT16: 1, DataType.UINT16: 1}.get(d, 4 if "64" in d.value else 2)
        if off + w > 125:
            break
        v = SAMPLES[d][int(rng.integers(len(SAMPLES[d])))]
        scale = float(rng.choice([1.0, 0.5, 0.001]))
        r = encode(v * scale if d != DataType.BOOL else v, d, byte_order=bo, word_order=wo, scale=scale)
        regs[off:off + w] = r
        fields.append(RegisterField(off, d, bo, wo, scale, 0.0))
        expect.append(decode(r, d, byte_order=bo, word_order=wo, scale=scale))
        off += w + int(rng.integers(0, 2))
    out = BlockDecoder(fields, 125).decode(regs)
    np.testing.assert_allclose(out, np.asarray(expect), rtol=1e-12)


def test_block_decoder_rejects_short_response_and_bad_layout() -> None:
    dec = BlockDecoder([RegisterField(0, DataType.FLOAT32)], 2)
    with pytest.raises(DecodeError):
        dec.decode([1])
    with pytest.raises(ValueError):
        BlockDecoder([RegisterField(1, DataType.FLOAT32)], 2)


def test_bool_in_register_and_bits() -> None:
    out = BlockDecoder([RegisterField(0, DataType.BOOL), RegisterField(1, DataType.BOOL)], 2).decode([0, 7])
    assert out.tolist() == [0.0, 1.0]
    assert decode_bits([True, False, True], np.asarray([2, 1])).tolist() == [1.0, 0.0]
    with pytest.raises(DecodeError):
        decode_bits([True], np.asarray([3]))
