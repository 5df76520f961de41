"""Quantize fp32 tables into the kernels' packed row formats, and back (pure torch).

Per row with min m and max M (x' = dequantize(quantize(x))):
    int8      : scale s = (M - m) / 255 (fp32), bias m; |x - x'| <= s / 2 (+ fp32 rounding).
    int8_half : s and m stored as fp16: |x - x'| <= s16 / 2 + |m - fp16(m)| + clamp, where
                s16 = fp16((M - fp16(m)) / 255) and clamp = max(0, M - 255 s16 - fp16(m)).
    int4      : as int8_half with 15 levels: s16 = fp16((M - fp16(m)) / 15), clamp at code 15.
fp16 keeps 11 significant bits, so the extra terms are about 2^-11 of |m| and of M - m.
"""

from __future__ import annotations

import torch


def _codes(w: torch.Tensor, lo: torch.Tensor, scale: torch.Tensor, levels: int) -> torch.Tensor:
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    return torch.clamp(torch.round((w - lo) / safe), 0, levels).to(torch.uint8)


def quantize_int8(weight: torch.Tensor) -> torch.Tensor:
    """fp32 [N, D] -> packed int8 rows [N, D + 8] (FBGEMM byte layout: fp32 scale, fp32 bias)."""
    w = weight.detach().float()
    lo, hi = w.min(1, keepdim=True).values, w.max(1, keepdim=True).values
    scale = (hi - lo) / 255.0
    tail = torch.cat([scale, lo], 1).contiguous().view(torch.uint8)
    return torch.cat([_codes(w, lo, scale, 255), tail], 1).contiguous()


def quantize_int8_half(weight: torch.Tensor) -> torch.Tensor:
    """fp32 [N, D] -> compact int8 rows [N, D + 4] (fp16 scale, fp16 bias)."""
    w = weight.detach().float()
    lo16 = w.min(1, keepdim=True).values.half()
    scale16 = ((w.max(1, keepdim=True).values - lo16.float()) / 255.0).half()
    tail = torch.cat([scale16, lo16], 1).contiguous().view(torch.uint8)
    codes = _codes(w, lo16.float(), scale16.float(), 255)
    return torch.cat([codes, tail], 1).contiguous()


def quantize_int4(weight: torch.Tensor) -> torch.Tensor:
    """fp32 [N, D] -> packed int4 rows [N, ceil(D/2) + 4] (FBGEMM 4-bit layout)."""
    w = weight.detach().float()
    lo16 = w.min(1, keepdim=True).values.half()
    scale16 = ((w.max(1, keepdim=True).values - lo16.float()) / 15.0).half()
    codes = _codes(w, lo16.float(), scale16.float(), 15)
    if codes.shape[1] % 2:
        codes = torch.cat([codes, codes.new_zeros(codes.shape[0], 1)], 1)
    packed = codes[:, 0::2] | (codes[:, 1::2] << 4)  # element 2k low nibble, 2k+1 high
    tail = torch.cat([scale16, lo16], 1).contiguous().view(torch.uint8)
    return torch.cat([packed, tail], 1).contiguous()


def _scale_bias(packed: torch.Tensor, tail_bytes: int, fmt: str) -> tuple[int, torch.Tensor]:
    """Code bytes per row and the rows' [N, 2] fp32 (scale, bias) from a packed table whose rows
    end in `tail_bytes` bytes of them (two fp32 or two fp16 values)."""
    if packed.dim() != 2 or packed.dtype != torch.uint8 or packed.shape[1] <= tail_bytes:
        raise ValueError(
            f"{fmt} table: expected uint8 rows of codes plus {tail_bytes} bytes of scale and "
            f"bias, [N, > {tail_bytes}], got {packed.dtype} {list(packed.shape)}"
        )
    nbytes = packed.shape[1] - tail_bytes
    # A copy into fresh storage: a view of the slice would start at byte offset nbytes (not a
    # multiple of the value size for a one-row table, where the slice is already contiguous).
    tail = packed[:, nbytes:].clone(memory_format=torch.contiguous_format)
    value = torch.float32 if tail_bytes == 8 else torch.float16
    return nbytes, tail.view(value).float()


def dequantize_int8(packed: torch.Tensor) -> torch.Tensor:
    """Packed int8 rows [N, D + 8] -> fp32 [N, D]."""
    d, tail = _scale_bias(packed, 8, "int8")
    return packed[:, :d].float() * tail[:, :1] + tail[:, 1:]


def dequantize_int8_half(packed: torch.Tensor) -> torch.Tensor:
    """Compact int8 rows [N, D + 4] -> fp32 [N, D]."""
    d, tail = _scale_bias(packed, 4, "int8_half")
    return packed[:, :d].float() * tail[:, :1] + tail[:, 1:]


def dequantize_int4(packed: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Packed int4 rows [N, ceil(D/2) + 4] -> fp32 [N, D] (D = 2 * code bytes unless given)."""
    nbytes, tail = _scale_bias(packed, 4, "int4")
    dim = 2 * nbytes if dim is None else dim
    if dim not in (2 * nbytes - 1, 2 * nbytes):
        raise ValueError(f"int4 table: rows of {nbytes} code bytes hold {2 * nbytes - 1} or "
                         f"{2 * nbytes} columns, not dim={dim}")  # fmt: skip
    codes = torch.stack([packed[:, :nbytes] & 15, packed[:, :nbytes] >> 4], 2).flatten(1)
    return codes[:, :dim].float() * tail[:, :1] + tail[:, 1:]
