"""The training engine: one deterministic, resumable, multi-process loop for any classifier.

`wave train`, `wave distill` and `wave spawn` all call `train`; what differs between them is the
model, the loss (`cross_entropy_loss`, `kd_loss`, or any per-sample loss) and the parameter
groups. The model is any `nn.Module` mapping images (B, C, H, W) float32 to logits (B, classes).

What the loop guarantees:

- Determinism. Epoch e visits the samples in the order `np.random.default_rng([seed, e])
  .permutation(n)`, whatever the process count or resumption; the global torch generators are
  reseeded before every step from (seed, global step, rank), so dropout-like randomness needs no
  saved state. Same seed, same machine and thread count: bit-identical parameters. On CUDA the
  deterministic kernels are asked for; an op that has none (flash attention's backward, say)
  warns rather than fails.
- Exact resumption. A checkpoint (safetensors, written atomically) holds the model, the AdamW
  state and the position (epoch, step); resuming replays nothing and skips the batches already
  done, so an interrupted run ends bit-identical to an uninterrupted one.
- Multi-process data parallelism under torchrun. Every rank draws the same global batch and
  takes `batch[rank::world]`; its loss is sum(per-sample losses) * world / len(batch), which
  DistributedDataParallel averages over ranks into exactly the one-process mean gradient.
- No NaN checkpoint. Non-finite losses or gradient norms are flagged on the device (no host
  sync) and checked every 20 steps, at the same steps on every rank, and before every checkpoint write;
  the run stops with a WaveError and the last good checkpoint stays on disk.
- Interrupts. Where the signal handlers of `interrupts.py` are installed (the `wave` command),
  SIGINT and SIGTERM stop the run after the step in progress: that exact position is
  checkpointed (when there is a checkpoint) and `Interrupted` is raised, so a resumed run ends
  bit-identical too. With several processes, all ranks agree at the next health check and stop
  at the same step.

Progress and checkpoints come from rank 0 only; every rank returns the same `TrainResult`.
"""

from __future__ import annotations

import random
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..configs import TrainConfig
from ..errors import WaveError
from ..io.storage import atomic_write_bytes
from . import interrupts
from .batches import BatchSource, batch_source
from .checkpoint import NonFinite, Position, checkpoint_bytes, fingerprint, jsonable
from .determinism import deterministic, mix, seed_step, set_deterministic_cublas
from .distributed import broadcast_floats, resolve_device
from .evaluation import evaluate
from .interrupts import Interrupted
from .objectives import LossFn, cross_entropy_loss, default_param_groups, lr_at
from .plan import Plan, Progress, TrainResult, check_groups, start_position
from .recipe import ModelEma, mix_batch, random_erase

_PROGRESS_SECONDS = 0.5  # report "step" progress at most this often (wall time, rank 0)
_HEALTH_EVERY = 20  # at most this many steps between non-finite checks: each costs a host sync (and an all_reduce)
_NO_BAD_STEP = _HEALTH_EVERY  # "no non-finite step" in a health window (indices are 0.._HEALTH_EVERY-1)


def train(
    model: nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    config: TrainConfig,
    *,
    loss_fn: LossFn = cross_entropy_loss,
    param_groups: list[dict] | None = None,
    device: str | torch.device = "auto",
    checkpoint: str | Path | None = None,
    resume: bool = False,
    eval_data: tuple[np.ndarray, np.ndarray] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    meta: dict | None = None,
    workers: int = 0,
) -> TrainResult:
    """Train `model` in place with AdamW on images (n, C, H, W) float32 and labels (n,) int.

    loss_fn gives per-sample losses (B,); the step minimises their mean over the global batch.
    param_groups default to `default_param_groups`; a group's peak lr is config.lr * "lr_scale".
    checkpoint: a file written at every epoch end (and every config.checkpoint_every steps); with
    resume=True an existing one is continued exactly (refused if the fingerprint of the config,
    `meta`, the data or the model differs), and a complete one returns at once with its history.
    resume=False starts over and replaces it (but never a file that is not a checkpoint).
    eval_data (images, labels) is scored at each epoch end. meta (JSON-able) names what the caller
    wants a resumed run to share (dataset, model spec, teacher): it is part of the fingerprint.

    Under torchrun the process group is initialised if needed and the model wrapped in
    DistributedDataParallel. Every rank must see the checkpoint path (rank 0 writes it, all read
    it on resume). When the last batch has fewer samples than there are processes, the ranks
    without one run a forward and backward on one sample with its loss multiplied by 0, so the
    gradient all-reduce still has every rank and the gradient stays the one-process gradient.
    """
    source = batch_source(images, np.asarray(labels), config.augment)
    plan = Plan.of(source, config, resolve_device(device))
    if plan.device.type == "cuda":
        set_deterministic_cublas()
    model.to(plan.device)
    groups, optimizer = _optimizer(model, config, param_groups)
    params = [p for g in groups for p in g["params"] if p.requires_grad]
    run_fingerprint = fingerprint(config, plan.amp, meta, source, model, groups)
    path = Path(checkpoint) if checkpoint is not None else None
    position, resumed_from = start_position(path, resume, model, optimizer, run_fingerprint, config, plan.world)
    if position.complete:
        return TrainResult(position.history, position.global_step, 0.0, resumed_from, position.ema)

    run = _Run(model=model, optimizer=optimizer, params=params, config=config, loss_fn=loss_fn, plan=plan, path=path,
               fingerprint=run_fingerprint, eval_data=eval_data, on_progress=on_progress, position=position, workers=workers)
    was_training = model.training
    try:
        with deterministic(), interrupts.armed():
            model.train()
            return run.run(source, resumed_from)
    except Interrupted as e:  # raised by the signal handler itself (a second signal, say)
        e.kept = e.kept or run.kept()
        raise
    finally:
        model.train(was_training)


def _optimizer(model: nn.Module, config: TrainConfig, param_groups: list[dict] | None):
    """The checked parameter groups and their AdamW; drop-path set on the model if asked."""
    if config.drop_path:
        if not hasattr(model, "set_drop_path"):
            raise WaveError(f"drop-path needs a model with blocks to drop ({type(model).__name__} has none): set drop_path to 0")
        model.set_drop_path(config.drop_path)
    groups = check_groups(model, default_param_groups(model, config.weight_decay) if param_groups is None else param_groups)
    return groups, torch.optim.AdamW([{**g, "lr": config.lr} for g in groups], lr=config.lr, weight_decay=config.weight_decay)


class _Run:
    """One call of train(): the state of the loop and its small steps."""

    def __init__(self, *, model: nn.Module, optimizer: torch.optim.Optimizer, params: list[Tensor], config: TrainConfig,
                 loss_fn: LossFn, plan: Plan, path: Path | None, fingerprint: dict, eval_data, on_progress, position: Position,
                 workers: int = 0):
        self.model, self.optimizer, self.params, self.config, self.loss_fn = model, optimizer, params, config, loss_fn
        self.device, self.rank, self.world, self.amp = plan.device, plan.rank, plan.world, plan.amp
        self.n, self.steps_per_epoch, self.total_steps, self.epochs = plan.samples, plan.steps_per_epoch, plan.total_steps, plan.epochs
        self.path, self.fingerprint, self.eval_data, self.position = path, fingerprint, eval_data, position
        self.workers = workers  # DataLoader processes decoding image files ahead (in-memory arrays need none)
        self.on_progress = on_progress if self.rank == 0 else None
        self.net = model if self.world == 1 else nn.parallel.DistributedDataParallel(
            model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.ema = ModelEma(model, config.model_ema_decay) if config.model_ema else None
        if self.ema is not None and position.ema is not None:
            self.ema.state = {k: v.to(self.device) for k, v in position.ema.items()}
        if config.compile:  # the training step only: evaluation and checkpoints read the model itself
            # Dynamo traces through array_api_compat's lru_cache'd helpers (pure, so safe) and says so once per helper.
            warnings.filterwarnings("ignore", message=r"Dynamo detected a call to a `functools.lru_cache`")
            self.net = torch.compile(self.net)
        self.last_saved: int | None = None  # global step of the newest checkpoint on disk
        self.lr = lr_at(position.global_step, self.total_steps, config)
        self.start = time.perf_counter()
        self.session_steps = 0
        self.session_images = 0

    # -- the outer loop

    def run(self, source: BatchSource, resumed_from: int | None) -> TrainResult:
        pos = self.position
        self.source = source
        source.place(self.device)
        if self.eval_data is not None:  # converted once, not every epoch
            self.eval_data = batch_source(*self.eval_data)
            self.eval_data.place(self.device)
        # On-device accumulators: reading them forces a host sync, so it happens only at reports.
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)  # this rank's share of the epoch's loss sum
        # Health window: per step since the last check, loss sum + gradient norm (non-finite iff
        # either is); the global step of entry 0, and how many entries are filled.
        self.health = torch.zeros(_HEALTH_EVERY, dtype=torch.float32, device=self.device)
        self.health_start, self.health_len = pos.global_step, 0

        if resumed_from is not None:
            self.last_saved = resumed_from
            self._report("resumed", pos.epoch, pos.step, self._mean(pos.loss_sum, pos.step))
        elif self.path is not None:
            self._save()  # step 0: the checkpoint on disk now belongs to this run

        for epoch in range(pos.epoch, self.epochs):
            self._run_epoch(epoch)
            # _end_epoch's check just ran on every rank, so all agree, the last epoch included (a
            # signal there must not stop one rank alone: the others would wait for it forever).
            signum = self._stop_signal()
            if signum is not None:
                interrupts.clear()
                raise Interrupted(signum, self.kept())

        seconds = broadcast_floats([time.perf_counter() - self.start], self.device, self.world)[0]
        return TrainResult(pos.history, pos.global_step, seconds, resumed_from, self.ema.state if self.ema else None)

    def _run_epoch(self, epoch: int) -> None:
        config, pos, bs = self.config, self.position, self.config.batch_size
        steps = min(self.steps_per_epoch, self.total_steps - epoch * self.steps_per_epoch)
        first = pos.step if epoch == pos.epoch else 0
        permutation = np.random.default_rng([config.seed, epoch]).permutation(self.n)
        feed = self.source.shards(permutation, bs, self.rank, self.world, epoch, config.seed, first, steps, self.workers, self.device)
        # Rank 0 carries what earlier sessions summed; the other ranks add only their own shards.
        self.loss_sum.fill_(pos.loss_sum if (first and self.rank == 0) else 0.0)
        self.local_seen = min(first * bs, self.n) if self.rank == 0 else 0  # samples behind loss_sum
        self.epoch_start = time.perf_counter() - (pos.epoch_seconds if first else 0.0)
        self.last_report = time.perf_counter()

        try:
            self._run_steps(epoch, first, steps, feed)
        finally:
            feed.close()  # a file feed's worker processes end with the steps, not with the garbage collector

        self._end_epoch(epoch, steps)

    def _run_steps(self, epoch: int, first: int, steps: int, feed) -> None:
        config, pos = self.config, self.position
        for step, (x, y, idx, size, empty) in zip(range(first, steps), feed):
            g = epoch * self.steps_per_epoch + step
            self._train_step(g, x, y, idx, size, empty)
            done = step + 1
            pos.epoch, pos.step, pos.global_step = epoch, done, g + 1
            if self.path is not None and config.checkpoint_every and (g + 1) % config.checkpoint_every == 0 and done < steps:
                self._checkpoint(epoch, done)
            elif self.health_len == _HEALTH_EVERY:  # the same step on every rank
                self._check_finite()
            if self.on_progress is not None and time.perf_counter() - self.last_report >= _PROGRESS_SECONDS:
                self._report("step", epoch, done, self._mean(self.loss_sum.item(), None))
            signum = self._stop_signal() if done < steps else None
            if signum is not None:
                self._interrupt(signum, epoch, done)

    # -- one optimizer step

    def _train_step(self, g: int, x: Tensor, y: Tensor, idx: Tensor, size: int, empty: bool) -> None:
        """Forward, backward and AdamW step on this rank's shard (x, y at dataset indices idx) of
        a global batch of `size` images.

        Nothing here waits for the device: sizes are known on the host, and the loss sum and
        the health signal stay on the device until a report or a check reads them.
        """
        if x.device != self.device:  # data too large for the GPU: copy from pinned memory, asynchronously
            x, y, idx = (t.pin_memory().to(self.device, non_blocking=True) for t in (x, y, idx))

        self.lr = lr_at(g, self.total_steps, self.config)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr * group["lr_scale"]
        seed_step(self.config.seed, g, self.rank, self.device)
        lam = 1.0
        if not empty:
            x, lam = self._transform(x, g)

        with self.autocast():
            logits = self.net(x)  # (b, classes)
            losses = self.loss_fn(logits, x, y, idx)
            if lam != 1.0:  # mixup / cutmix: the targets mix as the images did
                losses = lam * losses + (1.0 - lam) * self.loss_fn(logits, x, y.flip(0), idx.flip(0))
        if losses.shape != (len(idx),):
            raise WaveError(f"the loss function must return per-sample losses of shape ({len(idx)},), got {tuple(losses.shape)}")
        shard_sum = losses.float().sum()
        # sum * world / size: DDP divides by world, leaving the mean over the whole global batch.
        loss = shard_sum * (0.0 if empty else self.world / size)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        signal = shard_sum.detach() if not empty else torch.zeros((), device=self.device)
        if self.config.grad_clip is not None:
            signal = signal + nn.utils.clip_grad_norm_(self.params, self.config.grad_clip)  # inf/NaN in either stays
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model)

        self.health[self.health_len] = signal
        self.health_len += 1
        if not empty:
            self.loss_sum.add_(shard_sum.detach())
            self.local_seen += len(idx)
        self.session_steps += 1
        self.session_images += size

    def _transform(self, x: Tensor, g: int) -> tuple[Tensor, float]:
        """This step's changes to the images, each drawn from (seed, step, rank): shifts and
        flips, random erasing, then mixup or cutmix (as timm orders them); and the mixing weight."""
        config = self.config
        x = self.source.augment(x)
        if config.reprob:
            x = random_erase(x, random.Random(mix(config.seed, g, self.rank, 1)), config.reprob)
        if config.mixup or config.cutmix:
            draws = np.random.RandomState(mix(config.seed, g, self.rank, 2) % 2**32)
            return mix_batch(x, draws, config.mixup, config.cutmix, config.mixup_prob, config.mixup_switch_prob)
        return x, 1.0

    def autocast(self):
        """bf16 autocast for forward and loss when amp is on (no GradScaler: bf16 has float32's range)."""
        if not self.amp:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    # -- checks, checkpoints, reports

    def _check_finite(self) -> None:
        """WaveError if a step since the last check had a non-finite loss or gradient norm, on any rank."""
        if self.health_len == 0:  # nothing ran since the last check (equally so on every rank)
            return
        bad = ~torch.isfinite(self.health[:self.health_len])
        first = torch.where(bad.any(), bad.int().argmax(), _NO_BAD_STEP)  # index of the first bad step
        if self.world > 1:
            dist.all_reduce(first, op=dist.ReduceOp.MIN)
        index = int(first.item())
        if index != _NO_BAD_STEP:
            g = self.health_start + index
            self._fail(f"non-finite loss at epoch {g // self.steps_per_epoch + 1}, step {g % self.steps_per_epoch + 1} (global step {g + 1})")
        self.health_start, self.health_len = self.health_start + self.health_len, 0

    def _stop_signal(self) -> int | None:
        """A signal (SIGINT, SIGTERM) every rank agrees to stop on now. One process: as soon as it
        is noted. Several: at the steps where the health check has just run on every rank, with
        one more all_reduce, so that all ranks stop at the same step."""
        if self.world == 1:
            return interrupts.pending()
        if self.health_len:  # no check at this step: the ranks cannot agree here
            return None
        flag = torch.tensor(interrupts.pending() or 0, device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item()) or None

    def _interrupt(self, signum: int, epoch: int, step: int) -> None:
        """Checkpoint the exact position (if a checkpoint is kept at all) and stop."""
        interrupts.clear()
        if self.path is not None:
            self._checkpoint(epoch, step)
        raise Interrupted(signum, self.kept())

    def kept(self) -> str | None:
        """What an interrupted run leaves to resume from."""
        if self.path is None or self.last_saved is None:
            return None
        return f"the checkpoint {self.path} (step {self.last_saved} of {self.total_steps})"

    def _fail(self, what: str) -> None:
        if self.path is None:
            kept = "no checkpoint was asked for"
        elif self.last_saved is None:
            kept = "no checkpoint was written yet"
        else:
            kept = f"the last good checkpoint {self.path} (global step {self.last_saved}) is kept"
        raise WaveError(f"{what}: {kept}; lower --lr, or check the data for NaN/inf values")

    def _epoch_loss_sum(self) -> float:
        """The epoch's loss sum over all ranks so far (a collective: call it on every rank)."""
        total = self.loss_sum.clone()
        if self.world > 1:
            dist.all_reduce(total)
        return float(total.item())

    def _checkpoint(self, epoch: int, step: int) -> None:
        """A mid-epoch checkpoint: checked first, so a non-finite state never reaches the disk."""
        self._check_finite()
        pos = self.position
        pos.loss_sum = self._epoch_loss_sum()
        pos.epoch_seconds = time.perf_counter() - self.epoch_start
        self._save()
        self._report("checkpoint", epoch, step, self._mean(self.loss_sum.item(), None))

    def _save(self) -> None:
        """Rank 0 writes the checkpoint of the current position; all ranks learn whether it worked."""
        pos = self.position
        header = {
            "epoch": pos.epoch, "step": pos.step, "global_step": pos.global_step, "complete": pos.complete,
            "epochs": self.epochs, "steps_per_epoch": self.steps_per_epoch, "total_steps": self.total_steps,
            "epoch_seconds": pos.epoch_seconds, "history": pos.history, "fingerprint": self.fingerprint,
            "param_groups": [
                {**jsonable({k: v for k, v in g.items() if k != "params"}), "parameters": len(g["params"])}
                for g in self.optimizer.param_groups
            ],
            "world_size": self.world, "torch": torch.__version__,
        }
        status, error = 0, None
        if self.rank == 0:
            try:
                data = checkpoint_bytes(self.model, self.optimizer, torch.tensor(pos.loss_sum, dtype=torch.float64), header,
                                        self.ema.state if self.ema else None)
                atomic_write_bytes(self.path, data)
            except NonFinite as e:
                status, error = 1, e
            except Exception as e:  # a WaveError from the atomic write (disk full, permissions), or another failure
                status, error = 2, e  # every rank must hear of it: the others are waiting in the all_reduce below
        if self.world > 1:  # doubles as the barrier after the write
            flag = torch.tensor(status, device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            status = int(flag.item())
        if status == 1:
            self._fail(f"non-finite parameters before the checkpoint at global step {pos.global_step} ({error or 'on rank 0'})")
        if status == 2:
            if isinstance(error, WaveError):
                raise error
            raise WaveError(f"cannot write checkpoint {self.path} ({error or 'failed on rank 0'}): check the folder and free space")
        self.last_saved = pos.global_step

    def _end_epoch(self, epoch: int, steps: int) -> None:
        pos = self.position
        self._check_finite()
        samples = min(steps * self.config.batch_size, self.n)
        train_loss = self._epoch_loss_sum() / samples
        seconds = broadcast_floats([time.perf_counter() - self.epoch_start], self.device, self.world)[0]
        result = ema_result = None
        if self.eval_data is not None:
            data, bs = self.eval_data, self.config.batch_size
            result = evaluate(self.model, data, data.labels, bs, self.device, workers=self.workers)
            if self.ema is not None:
                ema_result = evaluate(self.ema.copy_of(self.model), data, data.labels, bs, self.device, workers=self.workers)
        pos.history.append({
            "epoch": epoch + 1, "train_loss": train_loss, "lr": self.lr, "seconds": seconds,
            "images_per_second": samples / seconds if seconds > 0 else float("inf"), "eval": result,
            **({"ema_eval": ema_result} if ema_result is not None else {}),
        })
        pos.epoch, pos.step, pos.loss_sum, pos.epoch_seconds = epoch + 1, 0, 0.0, 0.0
        pos.complete = epoch + 1 == self.epochs
        if self.path is not None:
            self._save()
        self._report("epoch", epoch, steps, train_loss, train_loss=train_loss, eval=result, record=pos.history[-1])

    def _mean(self, loss_sum: float, steps: int | None) -> float:
        """Running mean loss of the epoch: of rank 0's samples (exact with one process)."""
        seen = self.local_seen if steps is None else min(steps * self.config.batch_size, self.n)
        return loss_sum / seen if seen else float("nan")

    def _report(self, event: str, epoch: int, step: int, loss: float, **extra) -> None:
        if self.on_progress is None:
            return
        now = time.perf_counter()
        elapsed = now - self.start
        pace = elapsed / self.session_steps if self.session_steps else float("nan")
        self.on_progress(Progress(
            epoch=epoch, epochs=self.epochs, step=step, steps_per_epoch=self.steps_per_epoch,
            global_step=self.position.global_step, total_steps=self.total_steps, loss=loss, lr=self.lr,
            images_per_second=self.session_images / elapsed if elapsed > 0 else 0.0,
            seconds_elapsed=elapsed, seconds_left=(self.total_steps - self.position.global_step) * pace,
            event=event, **extra,
        ))
        self.last_report = now
