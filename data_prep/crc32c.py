"""CRC-32C (Castagnoli), the checksum TFRecord framing uses, without TensorFlow.

`google_crc32c` (C, if installed) is used when present. Otherwise a numpy version
checksums many buffers at once: every buffer is cut into fixed-size chunks, all
chunks of all buffers advance together one 32-bit word per step (two 64K-entry
tables, i.e. slicing-by-4), and the chunk checksums are then folded per buffer with
the linear "advance by one chunk" operator. That runs at hundreds of MB/s, where a
byte-at-a-time Python loop manages about 2 MB/s.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy is imported only when used: with google_crc32c it never is
    import numpy as np

_POLY = 0x82F63B78  # reflected Castagnoli polynomial
_CHUNK = 1024  # bytes per lane; a multiple of 4
_LANES = 8192  # lanes per block (8 MB of data)

try:  # pragma: no cover - depends on the environment
    import google_crc32c as _google_crc32c  # type: ignore[import-not-found]
except ImportError:
    _google_crc32c = None


@lru_cache(maxsize=1)
def _byte_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (_POLY if crc & 1 else 0)
        table.append(crc)
    return tuple(table)


def _advance_register(register: int, data: bytes) -> int:
    """Raw register update (no pre/post inversion), byte at a time; for short inputs."""
    table = _byte_table()
    for byte in data:
        register = table[(register ^ byte) & 0xFF] ^ (register >> 8)
    return register


def crc32c_small(data: bytes) -> int:
    """CRC-32C of a short buffer (a few bytes, e.g. a record length) in pure Python."""
    if _google_crc32c is not None:
        return _google_crc32c.value(data)
    return _advance_register(0xFFFFFFFF, data) ^ 0xFFFFFFFF


@lru_cache(maxsize=1)
def _tables() -> tuple[np.ndarray, np.ndarray, np.ndarray, bytes]:
    """Word tables (low 16 bits, high 16 bits), chunk-advance tables and the init prefix."""
    import numpy as np

    t0 = np.array(_byte_table(), dtype=np.uint32)
    slices = [t0]
    for _ in range(3):
        previous = slices[-1]
        slices.append((previous >> 8) ^ t0[previous & 0xFF])
    t0, t1, t2, t3 = slices
    index = np.arange(65536, dtype=np.uint32)
    low = t3[index & 0xFF] ^ t2[index >> 8]
    high = t1[index & 0xFF] ^ t0[index >> 8]
    # Advancing a register over _CHUNK zero bytes is linear: tabulate it per register byte.
    zeros = bytes(_CHUNK)
    bit_images = [_advance_register(1 << bit, zeros) for bit in range(32)]
    advance = np.zeros((4, 256), dtype=np.uint32)
    for position in range(4):
        for value in range(1, 256):
            lowest = (value & -value).bit_length() - 1
            advance[position, value] = (
                advance[position, value & (value - 1)] ^ bit_images[8 * position + lowest]
            )
    # Four bytes that move a zero register to 0xFFFFFFFF: prepending them (after any zero
    # padding) makes a zero-initialised run equal to the standard 0xFFFFFFFF-initialised one.
    prefix = _solve_prefix()
    return low, high, advance, prefix


def _solve_prefix() -> bytes:
    """Find the 4 bytes p with register(0, p) == 0xFFFFFFFF (the map is linear, bijective)."""
    # Columns of the linear map bytes -> register, then Gaussian elimination over GF(2).
    columns = [_advance_register(0, (1 << bit).to_bytes(4, "little")) for bit in range(32)]
    rows = []  # (register value, input bits) pairs kept in echelon form
    for bit, column in enumerate(columns):
        value, combo = column, 1 << bit
        for pivot_value, pivot_combo in rows:
            if value ^ pivot_value < value:
                value ^= pivot_value
                combo ^= pivot_combo
        if value:
            rows.append((value, combo))
            rows.sort(reverse=True)
    target, combo = 0xFFFFFFFF, 0
    for pivot_value, pivot_combo in rows:
        if target ^ pivot_value < target:
            target ^= pivot_value
            combo ^= pivot_combo
    if target:
        raise AssertionError("CRC-32C prefix has no solution")  # cannot happen: map is bijective
    return combo.to_bytes(4, "little")


def _chunk_registers(words: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Registers (from 0) of each row of `words`, all rows advancing together.

    Columns are read in place (strided): for a block of _LANES rows the touched cache
    lines stay in cache across the 16 columns sharing them, which measured faster than
    transposing the block first."""
    import numpy as np

    lanes = words.shape[0]
    registers = np.zeros(lanes, dtype=np.uint32)
    mixed = np.empty(lanes, dtype=np.uint32)
    upper = np.empty(lanes, dtype=np.uint32)
    halves = mixed.view(np.uint16).reshape(lanes, 2)  # little-endian: [:, 0] is the low half
    low_half, high_half = halves[:, 0], halves[:, 1]
    for column in range(words.shape[1]):
        np.bitwise_xor(registers, words[:, column], out=mixed)
        np.take(low, low_half, out=registers)
        np.take(high, high_half, out=upper)
        np.bitwise_xor(registers, upper, out=registers)
    return registers


def crc32c_many(buffers: Sequence[bytes]) -> list[int]:
    """CRC-32C of every buffer, computed together (fast for many large buffers)."""
    if _google_crc32c is not None:
        return [_google_crc32c.value(buffer) for buffer in buffers]
    return crc32c_many_numpy(buffers)


def crc32c_many_numpy(buffers: Sequence[bytes]) -> list[int]:
    """The numpy implementation of `crc32c_many` (always available).

    Buffers go in groups of about one block (_LANES chunks), so the padded copy of a group
    stays in cache while its lanes run."""
    results: list[int] = []
    group: list[bytes] = []
    group_bytes = 0
    for buffer in buffers:
        padded = (len(buffer) + 4 + _CHUNK - 1) // _CHUNK * _CHUNK
        if group and group_bytes + padded > _LANES * _CHUNK:
            results += _group_crc32c(group)
            group, group_bytes = [], 0
        group.append(buffer)
        group_bytes += padded
    if group:
        results += _group_crc32c(group)
    return results


def _group_crc32c(buffers: Sequence[bytes]) -> list[int]:
    import numpy as np

    low, high, advance, prefix = _tables()
    chunk = _CHUNK
    # Front-pad each buffer to whole chunks: zeros (no effect on a zero register) then the
    # 4-byte prefix that sets the register to the standard initial value.
    chunk_counts = [(len(buffer) + 4 + chunk - 1) // chunk for buffer in buffers]
    parts = []
    for buffer, count in zip(buffers, chunk_counts, strict=True):
        parts += (bytes(count * chunk - len(buffer) - 4), prefix, buffer)
    words = np.frombuffer(b"".join(parts), dtype="<u4").reshape(-1, chunk // 4)
    registers = np.concatenate(
        [
            _chunk_registers(words[start : start + _LANES], low, high)
            for start in range(0, words.shape[0], _LANES)
        ]
    )
    # Fold chunk registers per buffer: R = advance(R) ^ r_k, buffers right-aligned so the
    # leading empty slots (register 0) change nothing.
    most = max(chunk_counts)
    grid = np.zeros((most, len(buffers)), dtype=np.uint32)
    ends = np.cumsum(chunk_counts)
    starts = ends - np.asarray(chunk_counts)
    for index, (start, end) in enumerate(zip(starts, ends, strict=True)):
        grid[most - (end - start) :, index] = registers[start:end]
    folded = np.zeros(len(buffers), dtype=np.uint32)
    for row in grid:
        folded = (
            advance[0][folded & 0xFF]
            ^ advance[1][(folded >> 8) & 0xFF]
            ^ advance[2][(folded >> 16) & 0xFF]
            ^ advance[3][folded >> 24]
        ) ^ row
    return [int(value) ^ 0xFFFFFFFF for value in folded]


def masked_crc(crc: int) -> int:
    """TFRecord's masking of a CRC (rotate right by 15, add a constant)."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF
