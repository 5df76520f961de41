"""Turn paper plans (one per topology) into JSON and into the text recsys-plan prints."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from recsys.distributed.paper_plan import TopologyPlan
from recsys.distributed.topology import GB


def plan_to_json(plan: TopologyPlan) -> dict[str, Any]:
    """A fitted topology: tables (with shards), devices and the planner's step estimate."""
    out = {k: v for k, v in asdict(plan).items() if k not in ("tables", "devices")}
    out["fits"] = True
    out["step_ms"] = plan.step_ms
    out["tables"] = [{**asdict(t), "ranks": t.ranks} for t in plan.tables]
    out["devices"] = [asdict(d) for d in plan.devices]
    return out


def failure_to_json(label: str, hosts: int, gpus_per_host: int, error: str) -> dict[str, Any]:
    return {"label": label, "hosts": hosts, "gpus_per_host": gpus_per_host,
            "world_size": hosts * gpus_per_host, "fits": False, "error": error}  # fmt: skip


def _gb(n: float) -> str:
    return f"{n / GB:.2f}"


def _ranks(ranks: list[int]) -> str:
    if len(ranks) > 2 and ranks == list(range(ranks[0], ranks[-1] + 1)):
        return f"{ranks[0]}-{ranks[-1]}"
    return ",".join(map(str, ranks))


def format_plan(plan: TopologyPlan) -> str:
    """Tables (type, ranks, GB) then devices (HBM/DDR used + reserved vs cap, ms)."""
    lines = [f"== {plan.label}: {plan.world_size} ranks, batch {plan.batch_size}/rank, "
             f"planner step estimate {plan.step_ms:.3f} ms (embeddings, slowest rank)"]  # fmt: skip
    lines.append(f"  {'table':<12}{'rows':>12}{'dim':>6}  {'sharding':<15}{'ranks':<12}"
                 f"{'HBM GB':>9}{'DDR GB':>9}")  # fmt: skip
    for t in plan.tables:
        hbm = sum(s.hbm_bytes for s in t.shards)
        ddr = sum(s.ddr_bytes for s in t.shards)
        lines.append(f"  {t.name:<12}{t.rows:>12,}{t.dim:>6}  {t.sharding_type:<15}"
                     f"{_ranks(t.ranks):<12}{_gb(hbm):>9}{_gb(ddr):>9}")  # fmt: skip
    head = "used+reserved / cap GB"
    lines.append(f"  {'rank':<6}{'HBM ' + head:>30}{'DDR ' + head:>30}{'est ms':>9}")
    for d in plan.devices:
        hbm = f"{_gb(d.hbm_bytes)}+{_gb(d.hbm_reserved)} / {_gb(d.hbm_cap)}"
        ddr = f"{_gb(d.ddr_bytes)}+{_gb(d.ddr_reserved)} / {_gb(d.ddr_cap)}"
        lines.append(f"  {d.rank:<6}{hbm:>30}{ddr:>30}{d.perf_ms:>9.3f}")
    return "\n".join(lines)


def format_summary(entries: list[dict[str, Any]]) -> str:
    """One line per topology: fits or not, peak HBM share, step estimate."""
    lines = []
    for e in entries:
        if not e["fits"]:
            lines.append(f"  {e['label']:<24} does not fit")
            continue
        peak = max(d["hbm_bytes"] + d["hbm_reserved"] for d in e["devices"])
        cap = e["devices"][0]["hbm_cap"]
        share = f"{100 * peak / cap:.0f}%" if cap else "-"
        lines.append(f"  {e['label']:<24} fits: peak HBM {_gb(peak)} / {_gb(cap)} GB "
                     f"({share}), step estimate {e['step_ms']:.3f} ms")  # fmt: skip
    return "\n".join(lines)
