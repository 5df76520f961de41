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


def dequantize_int8(packed: torch.Tensor) -> torch.Tensor:
    """Packed int8 rows [N, D + 8] -> fp32 [N, D]."""
    d = packed.shape[1] - 8
    tail = packed[:, d:].contiguous().view(torch.float32)  # [N, 2]
    return packed[:, :d].float() * tail[:, :1] + tail[:, 1:]


def dequantize_int8_half(packed: torch.Tensor) -> torch.Tensor:
    """Compact int8 rows [N, D + 4] -> fp32 [N, D]."""
    d = packed.shape[1] - 4
    tail = packed[:, d:].contiguous().view(torch.float16).float()  # [N, 2]
    return packed[:, :d].float() * tail[:, :1] + tail[:, 1:]


def dequantize_int4(packed: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Packed int4 rows [N, ceil(D/2) + 4] -> fp32 [N, D] (D = 2 * code bytes unless given)."""
    nbytes = packed.shape[1] - 4
    dim = 2 * nbytes if dim is None else dim
    tail = packed[:, nbytes:].contiguous().view(torch.float16).float()  # [N, 2]
    codes = torch.stack([packed[:, :nbytes] & 15, packed[:, :nbytes] >> 4], 2).flatten(1)
    return codes[:, :dim].float() * tail[:, :1] + tail[:, 1:]
