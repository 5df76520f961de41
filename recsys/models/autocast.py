"""A context that turns autocast off only where it is on (entering one costs ~6 us per call)."""

from __future__ import annotations

import contextlib

import torch


def autocast_off(device: str) -> contextlib.AbstractContextManager:
    """`torch.autocast(device, enabled=False)` when autocast is on for `device`, else a no-op
    context: kernels with their own dtype handling must not have their inner ops autocast."""
    if torch.is_autocast_enabled(device):
        return torch.autocast(device, enabled=False)
    return contextlib.nullcontext()
