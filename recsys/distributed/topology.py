"""Hardware of one host, and the torchrec `Topology` of N such hosts, for the sharding planner.

Figures are in the planner's own units: GB = 2**30 bytes, and bandwidths in GB/s of 2**30
bytes, which torchrec stores as bytes per millisecond (so its perf estimates are in ms).
"""

from __future__ import annotations

from dataclasses import dataclass

from torchrec.distributed.planner import Topology

GB = 1024**3


@dataclass(frozen=True)
class HostSpec:
    """One host: its GPUs (or CPU ranks), their memory, and the links between them."""

    name: str
    device: str  # cuda | cpu (the planner's compute device)
    gpus_per_host: int
    hbm_gb: float  # per GPU
    ddr_gb: float  # per host, shared by its ranks
    hbm_bw_gbps: float
    intra_host_bw_gbps: float
    inter_host_bw_gbps: float

    def label(self, hosts: int) -> str:
        """E.g. `big_basin 2x8` (hosts x ranks per host)."""
        return f"{self.name} {hosts}x{self.gpus_per_host}"

    @property
    def hbm_cap(self) -> int:
        """HBM bytes per rank."""
        return int(self.hbm_gb * GB)

    @property
    def ddr_cap(self) -> int:
        """DDR bytes per rank: the host's memory split evenly over its ranks."""
        return int(self.ddr_gb * GB / self.gpus_per_host)


def _bytes_per_ms(gbps: float) -> float:
    return gbps * GB / 1000


def build_topology(spec: HostSpec, hosts: int) -> Topology:
    """The planner's view of `hosts` hosts of `spec` (world size hosts x gpus_per_host)."""
    return Topology(
        world_size=hosts * spec.gpus_per_host,
        local_world_size=spec.gpus_per_host,
        compute_device=spec.device,
        hbm_cap=spec.hbm_cap,
        ddr_cap=spec.ddr_cap,
        hbm_mem_bw=_bytes_per_ms(spec.hbm_bw_gbps),
        intra_host_bw=_bytes_per_ms(spec.intra_host_bw_gbps),
        inter_host_bw=_bytes_per_ms(spec.inter_host_bw_gbps),
    )
