"""The PTX that decodes NF4 nibbles by byte permutes, run here by a small evaluator of the instructions it uses
(PTX ISA semantics of mov, shl, shr, xor, prmt and lop3), so that the table, selectors and masks are checked
on every byte value without a GPU. On a GPU, test_triton_kernels runs the same text compiled."""

from __future__ import annotations

import re

import numpy as np
import pytest

NF4 = [
    -1.0,
    -0.6961928009986877,
    -0.5250730514526367,
    -0.39491748809814453,
    -0.28444138169288635,
    -0.18477343022823334,
    -0.09105003625154495,
    0.0,
    0.07958029955625534,
    0.16093020141124725,
    0.24611230194568634,
    0.33791524171829224,
    0.44070982933044434,
    0.5626170039176941,
    0.7229568362236023,
    1.0,
]  # fmt: skip  (bitsandbytes' NF4 values)
MASK = 0xFFFFFFFF


def _prmt(a: int, b: int, c: int) -> int:
    source = (b << 32) | a
    out = 0
    for i in range(4):
        sel = (c >> (4 * i)) & 0xF
        byte = (source >> (8 * (sel & 7))) & 0xFF
        if sel & 8:  # replicate the selected byte's sign bit
            byte = 0xFF if byte & 0x80 else 0
        out |= byte << (8 * i)
    return out


def _lop3(a: int, b: int, c: int, lut: int) -> int:
    out = 0
    for bit in range(32):
        index = ((a >> bit) & 1) << 2 | ((b >> bit) & 1) << 1 | ((c >> bit) & 1)
        out |= ((lut >> index) & 1) << bit  # a, b, c stand for 0xF0, 0xCC, 0xAA in the truth table
    return out


def run_ptx(text: str, operands: dict[str, int]) -> dict[str, int]:
    regs = dict(operands)

    def value(token: str) -> int:
        token = token.strip()
        return int(token, 0) & MASK if token[0].isdigit() else regs[token]

    for line in text.strip("{}\n").splitlines():
        line = line.split("//")[0].strip().rstrip(";")
        if not line or line.startswith(".reg"):
            continue
        op, rest = line.split(None, 1)
        dest, *args = [t.strip() for t in rest.split(",")]
        v = [value(a) for a in args]
        if op == "mov.b32":
            regs[dest] = v[0]
        elif op == "shl.b32":
            regs[dest] = (v[0] << v[1]) & MASK
        elif op == "shr.u32":
            regs[dest] = v[0] >> v[1]
        elif op == "xor.b32":
            regs[dest] = v[0] ^ v[1]
        elif op == "prmt.b32":
            regs[dest] = _prmt(v[0], v[1], v[2])
        elif op == "lop3.b32":
            regs[dest] = _lop3(v[0], v[1], v[2], v[3])
        else:
            raise AssertionError(f"the evaluator does not know {op!r}")
    return regs


def test_every_byte_decodes_to_the_fp16_values_of_both_nibbles_in_its_slot():
    from models.nf4_gemv import _table, _words, prmt_asm

    torch = pytest.importorskip("torch")
    text = prmt_asm(NF4)
    assert set(re.findall(r"\$(\d+)", text)) == {"0", "1", "2", "3", "4", "5", "9", "13", "17"}
    words = _words(NF4)
    table = _table(torch.tensor(NF4))
    assert table[16:20].view(torch.int32).tolist() == [np.int32(np.uint32(words[i])) for i in (0, 2, 4, 6)]
    # registers the kernel passes: $5, $9, $13, $17 are the loaded table words (first copy of each input)
    loaded = {"$5": words[0], "$9": words[2], "$13": words[4], "$17": words[6]}
    expected = np.asarray(NF4, dtype=np.float16)
    rng = np.random.default_rng(0)
    samples = [b0 | b0 << 8 | b0 << 16 | b0 << 24 for b0 in range(256)]
    samples += [int(x) for x in rng.integers(0, 1 << 32, 2000, dtype=np.uint64)]
    for packed in samples:
        regs = run_ptx(text, {"$4": packed, **loaded})
        bytes_ = [(packed >> (8 * i)) & 0xFF for i in range(4)]
        for name, nibble in (("even", 4), ("odd", 0)):  # high nibble: even input; low nibble: odd input
            first, second = ("$0", "$1") if name == "even" else ("$2", "$3")
            halves = [regs[first] & 0xFFFF, regs[first] >> 16, regs[second] & 0xFFFF, regs[second] >> 16]
            got = np.asarray(halves, dtype=np.uint16).view(np.float16)
            want = expected[[(b >> nibble) & 15 for b in bytes_]]
            assert np.array_equal(got, want), (hex(packed), name, got, want)
