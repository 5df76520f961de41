"""Where training results go: console log, TensorBoard scalars, and metrics.json.

Only rank 0 reports; the others get a reporter that does nothing, so no two processes write
the same files.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from recsys.utils.atomic import atomic_write_json

log = logging.getLogger("recsys.train")


class Reporter:
    def __init__(self, run_dir: Path, enabled: bool, tensorboard: bool, config_yaml: str) -> None:
        self.run_dir = run_dir
        self.enabled = enabled
        self.writer = None
        if enabled and tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
            self.writer.add_text("config", "```yaml\n" + config_yaml + "\n```", 0)

    def train_progress(self, step: int, total: int, values: dict[str, float], eta_s: float) -> None:
        if not self.enabled:
            return
        log.info(
            "step %d/%d  loss %.5f  auc %.4f  lr %.3g  %.0f samples/s  data wait %.0f%%  ETA %s",
            step, total, values["loss"], values.get("auc", math.nan), values["lr"],
            values["samples_per_s"], 100 * values["data_wait_fraction"], _fmt_time(eta_s),
        )  # fmt: skip
        self._scalars("train", values, step)

    def eval_result(self, split: str, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        bayes = ""
        if "bayes_auc" in metrics:
            bayes = (
                f"  | Bayes-optimal auc {metrics['bayes_auc']:.4f} logloss "
                f"{metrics['bayes_logloss']:.5f} "
                f"(gap closed {100 * metrics['auc_gap_closed']:.1f}%)"
            )
        log.info(
            "%s @ step %d: auc %.4f  logloss %.5f  NE %.4f  calibration %.3f  accuracy %.4f%s",
            split, step, metrics["auc"], metrics["logloss"], metrics["ne"],
            metrics["calibration"], metrics["accuracy"], bayes,
        )  # fmt: skip
        self._scalars("eval", {f"{split}_{k}": v for k, v in metrics.items()}, step)

    def _scalars(self, prefix: str, values: dict[str, float], step: int) -> None:
        if self.writer is None:
            return
        for k, v in values.items():
            if isinstance(v, int | float) and math.isfinite(v):
                self.writer.add_scalar(f"{prefix}/{k}", v, step)

    def finish(self, results: dict[str, Any], hparams: dict[str, Any]) -> None:
        """Write metrics.json (atomically) and the TensorBoard hparams entry."""
        if not self.enabled:
            return
        atomic_write_json(self.run_dir / "metrics.json", results)
        if self.writer is not None:
            finals = {
                f"final/{split}_{k}": v
                for split in ("valid", "test")
                for k, v in results.get(split, {}).items()
                if isinstance(v, float) and math.isfinite(v)
            }
            self.writer.add_hparams(hparams, finals, run_name=".")
            self.writer.close()


def _fmt_time(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h:d}:{m:02d}:{s:02d}"
