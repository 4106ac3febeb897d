"""The training loop shared by DPO and SFT: batches in, steps, metrics, checkpoints, NaN stop.

The loop knows nothing of losses: it takes a compiled ``train_step(state, batch)`` and a
``batch_source(epoch, start)`` that yields the numpy batches of an epoch from batch ``start``
on. It resumes from the data position stored in the state, so a run restored from a
checkpoint reads exactly the batches an uninterrupted run would have read next.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import numpy as np

from spar_jax.errors import SparError
from spar_jax.training.checkpoint import Checkpointer
from spar_jax.training.metrics import MetricsLogger, plot_loss
from spar_jax.training.state import TrainState

NumpyBatch = Mapping[str, np.ndarray]
BatchSource = Callable[[int, int], Iterator[NumpyBatch]]  # (epoch, start) -> batches


class NonFiniteLossError(SparError, FloatingPointError):
    """The loss (or gradient norm) became nan/inf; the message names the step and the records."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class LoopConfig:
    """How long to train and how often to save.

    Attributes:
      epochs: passes over the data (the schedule's length is ``epochs * batches_per_epoch``).
      batches_per_epoch: optimizer steps per epoch.
      max_steps: stop once the state reaches this step (0: run every epoch). The schedule is
        not shortened, so a run stopped here and resumed equals an uninterrupted one.
      checkpoint_every: save every N steps (0: only at the end); the last step is always saved.
      desc: progress-bar label.
      progress: show the tqdm bar.
    """

    epochs: int
    batches_per_epoch: int
    max_steps: int = 0
    checkpoint_every: int = 0
    desc: str = "train"
    progress: bool = True

    @property
    def total_steps(self) -> int:
        return self.epochs * self.batches_per_epoch


@dataclasses.dataclass
class LoopResult:
    """What a run did: the final state, its last metrics record and the files it wrote."""

    state: TrainState
    steps_run: int  # steps taken by this call (not counting a resumed run's earlier steps)
    last: dict[str, Any]
    metrics_path: str
    plot_path: str | None
    checkpoint_step: int | None


def _positions(cfg: LoopConfig, epoch: int, index: int) -> Iterator[tuple[int, int]]:
    """(epoch, batch index) of every remaining step from a data position."""
    for e in range(epoch, cfg.epochs):
        for i in range(index if e == epoch else 0, cfg.batches_per_epoch):
            yield e, i


def _check_finite(step: int, epoch: int, index: int, batch: NumpyBatch, metrics, ckpt) -> None:
    bad = {k: metrics[k] for k in ("loss", "grad_norm") if k in metrics}
    if all(math.isfinite(float(v)) for v in bad.values()):
        return
    records = [int(i) for i in np.asarray(batch.get("index", [])) if i >= 0]
    last = None
    if ckpt is not None:
        ckpt.wait()
        last = ckpt.latest_step()
    kept = (
        f"the last good checkpoint is step {last} in {ckpt.directory}"
        if last is not None
        else "no checkpoint was saved yet"
    )
    values = ", ".join(f"{k}={float(v)}" for k, v in bad.items())
    raise NonFiniteLossError(
        f"non-finite {values} at step {step} (epoch {epoch}, batch {index}; records {records}); "
        f"this state was not saved and {kept}. Check those records, lower the learning rate or "
        "compute in float32, then resume from the checkpoint."
    )


def drop_index(batch: NumpyBatch) -> NumpyBatch:
    """The batch without ``index``, which stays on the host for error messages."""
    return {k: v for k, v in batch.items() if k != "index"}


def run(
    state: TrainState,
    train_step: Callable[[TrainState, Any], tuple[TrainState, Mapping[str, Any]]],
    batch_source: BatchSource,
    cfg: LoopConfig,
    *,
    out_dir: str,
    checkpointer: Checkpointer | None = None,
    prepare: Callable[[NumpyBatch], Any] | None = None,
    count_tokens: Callable[[NumpyBatch], int] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> LoopResult:
    """Trains from ``state``'s data position to the end (or ``cfg.max_steps``).

    Args:
      state: initial or restored state (donated to ``train_step``: do not reuse it).
      train_step: compiled step (``steps.compile_step``).
      batch_source: ``(epoch, start) -> iterator`` of numpy batches with an ``index`` key.
      cfg: epochs, steps per epoch, stop step and checkpoint interval.
      out_dir: where ``metrics.jsonl`` and ``loss.png`` go.
      checkpointer: saves the state every ``cfg.checkpoint_every`` steps and at the end.
      prepare: numpy batch -> what ``train_step`` takes (e.g. add reference log-probs); the
        default drops ``index``, which stays on the host for error messages.
      count_tokens: real tokens of a batch, for throughput (default: sum of every ``*mask``).
      meta: JSON facts saved with each checkpoint.

    Raises:
      NonFiniteLossError: the loss or gradient norm of a step is nan/inf; that state is not
        saved, the last good checkpoint stays the latest.
    """
    prepare = prepare or drop_index
    count_tokens = count_tokens or _count_tokens
    state = state.committed()  # fresh and restored states then share one compilation
    start_step = int(state.step)
    epoch0, index0 = int(state.epoch), int(state.batch_index)
    if index0 > cfg.batches_per_epoch:
        raise SparError(
            f"the checkpoint is at batch {index0} of epoch {epoch0} but an epoch has "
            f"{cfg.batches_per_epoch} batches: the data or batch size changed since it was saved; "
            "resume with the run's data and batch_size, or start over (resume=False)"
        )
    # Only process 0 writes the log, the bar and the plot.
    main = jax.process_index() == 0
    logger = MetricsLogger(
        out_dir,
        total_steps=cfg.total_steps,
        initial_step=start_step,
        desc=cfg.desc,
        progress=cfg.progress,
        enabled=main,
    )
    step, last, saved = start_step, {}, None
    source: Iterator[NumpyBatch] | None = None
    source_epoch = -1
    try:
        for epoch, index in _positions(cfg, epoch0, index0):
            if cfg.max_steps and step >= cfg.max_steps:
                break
            if epoch != source_epoch:
                source, source_epoch = batch_source(epoch, index), epoch
            batch = next(source)
            tick = time.perf_counter()
            state, metrics = train_step(state, prepare(batch))
            metrics = jax.device_get(metrics)  # waits for the step: the NaN check needs it
            seconds = time.perf_counter() - tick
            step += 1
            _check_finite(step, epoch, index, batch, metrics, checkpointer)
            nxt = (epoch, index + 1) if index + 1 < cfg.batches_per_epoch else (epoch + 1, 0)
            state = state.at_position(*nxt)
            last = logger.log(
                step,
                metrics,
                tokens=count_tokens(batch),
                seconds=seconds,
                extra={"epoch": epoch, "batch": index},
            )
            if (
                checkpointer is not None
                and cfg.checkpoint_every
                and step % cfg.checkpoint_every == 0
            ):
                saved = checkpointer.save(state, meta)
        if checkpointer is not None and saved != step and step > start_step:
            saved = checkpointer.save(state, meta)
        if checkpointer is not None:
            checkpointer.wait()
    finally:
        logger.close()
    plot = None
    if main and os.path.getsize(logger.path):
        plot = plot_loss(logger.path, os.path.join(out_dir, "loss.png"))
    return LoopResult(
        state=state,
        steps_run=step - start_step,
        last=last,
        metrics_path=logger.path,
        plot_path=plot,
        checkpoint_step=checkpointer.latest_step() if checkpointer is not None else None,
    )


def _count_tokens(batch: NumpyBatch) -> int:
    """Real tokens of the non-padding rows: the sum of every ``mask`` / ``*_mask`` entry."""
    weight = np.asarray(batch["weight"]) != 0
    total = 0
    for key, value in batch.items():
        if key == "mask" or (key.endswith("_mask") and not key.endswith("loss_mask")):
            total += int(np.asarray(value)[weight].sum())
    return total
