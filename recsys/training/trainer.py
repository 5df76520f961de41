"""The training loop: one path for every world size.

`Trainer.fit` trains for a number of steps (epochs are just a way to count them), validates
every `eval_every` steps and at the end, tests at the end, checkpoints every `checkpoint_every`
steps and at the end, and resumes exactly from a checkpoint (model, fused and dense optimizer
state, step, loader position, RNG, the partial logging window).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from recsys.data.batch import Batch
from recsys.data.loader import ParquetBatchLoader
from recsys.distributed.env import DistEnv
from recsys.errors import ConfigError
from recsys.training.checkpoint import CheckpointManager
from recsys.training.loss import bce_with_logits
from recsys.training.metrics import PredictionAccumulator, auc
from recsys.training.optim import LRSchedule
from recsys.training.reporting import Reporter

ForwardLoss = Callable[
    [torch.Tensor, Any, torch.Tensor], "tuple[torch.Tensor, torch.Tensor] | None"
]


@dataclass
class LoopSettings:
    total_steps: int
    eval_every: int = 0
    log_every: int = 50
    checkpoint_every: int = 0
    precision: str = "fp32"


@dataclass
class _Window:
    """Running sums between two progress lines (saved in checkpoints for exact resume)."""

    loss_sum: float = 0.0
    steps: float = 0  # rank-steps (fractional after a resume at another world size)
    samples: int = 0
    wait_s: float = 0.0
    start: float = field(default_factory=time.perf_counter)
    probs: list[torch.Tensor] = field(default_factory=list)
    labels: list[torch.Tensor] = field(default_factory=list)


class Trainer:
    def __init__(
        self,
        model: nn.Module,
        optimizer: Any,
        lr_groups: list[tuple[Any, float]],
        schedule: LRSchedule,
        train_loader: ParquetBatchLoader,
        eval_loaders: dict[str, Callable[[], ParquetBatchLoader]],
        checkpoints: CheckpointManager,
        reporter: Reporter,
        env: DistEnv,
        settings: LoopSettings,
        forward_loss: ForwardLoss | None = None,
    ) -> None:
        self.model, self.optimizer = model, optimizer
        # (dense, sparse, labels) -> (logits, loss) in one call where it applies, else None
        # (recsys.training.fused_forward); the model's modules and the loss otherwise
        self.forward_loss = forward_loss
        self.lr_groups, self.schedule = lr_groups, schedule
        self.train_loader, self.eval_loaders = train_loader, eval_loaders
        self.checkpoints, self.reporter = checkpoints, reporter
        self.env, self.settings = env, settings
        self.step = 0
        self.lr = 0.0
        self.last_train_loss = float("nan")
        self.window = _Window()
        self.timing = {"train_s": 0.0, "wait_s": 0.0, "samples": 0}

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.settings.precision == "bf16":
            return torch.autocast(self.env.device.type, dtype=torch.bfloat16)
        if self.settings.precision != "fp32":
            raise ConfigError(
                f"trainer.precision must be fp32 or bf16, got {self.settings.precision!r}"
            )
        return contextlib.nullcontext()

    def train_step(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """LR for this step, forward, loss, backward (fused embedding update), dense step."""
        lr_factor = self.schedule.apply(self.lr_groups, self.step)
        self.optimizer.zero_grad()  # also hands the new lr to the fused embedding kernels
        with self._autocast():  # under autocast the fused call declines (None): the modules run
            fused = self.forward_loss and self.forward_loss(batch.dense, batch.sparse, batch.labels)
            logits, loss = fused or (self.model(batch.dense, batch.sparse), None)  # [B]
        if loss is None:
            loss = bce_with_logits(logits.float(), batch.labels)
        loss.backward()
        self.optimizer.step()
        self.lr = lr_factor * self.lr_groups[-1][1]
        return loss.detach(), logits.detach()

    def fit(self) -> dict[str, Any]:
        s = self.settings
        while self.step < s.total_steps:
            batches = iter(self.train_loader)
            while self.step < s.total_steps:
                batch = self._next(batches)
                if batch is None:
                    break  # end of epoch
                t0 = time.perf_counter()
                loss, logits = self.train_step(batch.to(self.env.device, non_blocking=True))
                self.step += 1
                self._account(batch, loss, logits, time.perf_counter() - t0)
                self._periodic()
        return self._finish()

    def _next(self, batches: Iterator[Batch]) -> Batch | None:
        t0 = time.perf_counter()
        batch = next(batches, None)
        waited = time.perf_counter() - t0
        self.window.wait_s += waited
        self.timing["wait_s"] += waited
        return batch

    def _account(
        self, batch: Batch, loss: torch.Tensor, logits: torch.Tensor, step_s: float
    ) -> None:
        w = self.window
        w.loss_sum += float(loss)
        w.steps += 1
        w.samples += batch.size
        w.probs.append(torch.sigmoid(logits.float()).cpu())
        w.labels.append(batch.labels.cpu())
        self.timing["train_s"] += step_s
        self.timing["samples"] += batch.size

    def _periodic(self) -> None:
        s, step = self.settings, self.step
        if step % s.log_every == 0 or step == s.total_steps:
            self._log_window()
        if s.eval_every and step % s.eval_every == 0 and step < s.total_steps:
            self.reporter.eval_result("valid", step, self.evaluate("valid"))
        if s.checkpoint_every and step % s.checkpoint_every == 0 and step < s.total_steps:
            self.save_checkpoint()

    def _log_window(self) -> None:
        w = self.window
        if not w.steps:
            return
        stats = torch.tensor([w.loss_sum, w.steps, w.samples, w.wait_s], dtype=torch.float64)
        if self.env.world_size > 1:
            dist.all_reduce(stats)
        elapsed = max(time.perf_counter() - w.start, 1e-9)
        self.last_train_loss = float(stats[0] / stats[1])
        rate = float(stats[2]) / elapsed
        remaining = (self.settings.total_steps - self.step) * float(stats[2]) / float(stats[1])
        values = {
            "loss": self.last_train_loss,
            "auc": auc(torch.cat(w.probs), torch.cat(w.labels)) if w.probs else float("nan"),
            "lr": self.lr,
            "samples_per_s": rate,
            "data_wait_fraction": float(stats[3]) / self.env.world_size / elapsed,
        }
        self.reporter.train_progress(self.step, self.settings.total_steps, values, remaining / rate)
        self.window = _Window()

    @torch.no_grad()
    def evaluate(self, split: str) -> dict[str, float]:
        """Metrics of the model on a full split, over all ranks' predictions."""
        loader = self.eval_loaders[split]()
        self.model.eval()
        acc = PredictionAccumulator()
        try:
            for batch in loader:
                batch = batch.to(self.env.device)
                with self._autocast():
                    logits = self.model(batch.dense, batch.sparse)
                acc.add(torch.sigmoid(logits.float()), batch.labels, batch.true_ctr)
        finally:
            self.model.train()
        return acc.compute()

    # -- checkpoints -------------------------------------------------------------------------

    def trainer_state(self) -> dict[str, Any]:
        """Collective (every rank calls it): the window's sums are gathered from all ranks."""
        w = self.window
        local = torch.tensor([w.loss_sum, w.steps, w.samples], dtype=torch.float64)
        ranks = [torch.zeros_like(local) for _ in range(self.env.world_size)]
        dist.all_gather(ranks, local)
        return {
            "step": self.step,
            "world_size": self.env.world_size,
            "loader": self.train_loader.state_dict(),
            "last_train_loss": self.last_train_loss,
            "window": [
                {"loss_sum": float(r[0]), "steps": float(r[1]), "samples": int(r[2])} for r in ranks
            ],
        }

    def save_checkpoint(self) -> None:
        self.checkpoints.save(self.step, self.model, self.optimizer, self.trainer_state())

    def restore(self, path) -> None:
        state = self.checkpoints.load(path, self.model, self.optimizer)
        self.step = int(state["step"])
        self.train_loader.load_state_dict(state["loader"])
        self.last_train_loss = float(state["last_train_loss"])
        self.window = _restored_window(state["window"], self.env.rank, self.env.world_size)

    def _finish(self) -> dict[str, Any]:
        self._log_window()
        valid = self.evaluate("valid_full")
        self.reporter.eval_result("valid", self.step, valid)
        test = self.evaluate("test")
        self.reporter.eval_result("test", self.step, test)
        self.save_checkpoint()
        t = self.timing
        return {
            "steps": self.step,
            "final_train_loss": self.last_train_loss,
            "valid": valid,
            "test": test,
            "train_samples_per_s": t["samples"]
            * self.env.world_size
            / max(t["train_s"] + t["wait_s"], 1e-9),
            "data_wait_fraction": t["wait_s"] / max(t["train_s"] + t["wait_s"], 1e-9),
        }


def _restored_window(saved: list[dict] | dict, rank: int, world_size: int) -> _Window:
    """This rank's saved window sums: its own at the same world size (exact resume). At another
    world size rank 0 takes them all, with loss and step counts rescaled to the new number of
    ranks, so the logged mean still weighs every step alike. A dict: one rank's sums."""
    saved = [saved] if isinstance(saved, dict) else saved
    if len(saved) == world_size:
        mine, scale = [saved[rank]], 1
    else:
        mine, scale = (saved if rank == 0 else []), world_size / len(saved)
    return _Window(
        loss_sum=scale * sum(w["loss_sum"] for w in mine),
        steps=scale * sum(w["steps"] for w in mine),
        samples=sum(w["samples"] for w in mine),
    )
