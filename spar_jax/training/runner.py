"""What the DPO and SFT trainers do the same way once their step is built: resume from the
run's checkpoints, feed each process its rows of every batch, and run the loop on the mesh.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

from spar_jax import models
from spar_jax.errors import SparError
from spar_jax.training import checkpoint, data, loop
from spar_jax.training.placement import Placement
from spar_jax.training.run_config import RunConfig, loop_config
from spar_jax.training.state import TrainState


def make_checkpointer(run: RunConfig) -> checkpoint.Checkpointer:
    """The run's checkpoints under ``out_dir/checkpoints``."""
    return checkpoint.Checkpointer(
        os.path.join(run.out_dir, "checkpoints"),
        max_to_keep=run.keep_checkpoints,
        async_save=run.async_checkpoint,
    )


def maybe_resume(
    state: TrainState,
    ckpt: checkpoint.Checkpointer,
    run: RunConfig,
    log: Callable[[str], None] = print,
) -> tuple[TrainState, int | None]:
    """The latest checkpoint's state when ``run.resume`` and one exists; else ``state``.

    A run told not to resume starts over: the checkpoints a previous run left in the
    directory are deleted (and the log says so), so that none of them is later taken for
    this run's latest. A checkpoint saved by a run that started from other weights (another
    model, or another preset seed) is not resumed: that is a ResumeMismatchError.
    """
    step = ckpt.latest_step()
    if step is None:
        return state, None
    if not run.resume:
        log(
            f"resume=False: starting over, deleting the checkpoints {ckpt.all_steps()} of {ckpt.directory}"
        )
        ckpt.delete_all()
        return state, None
    saved, now = ckpt.meta(step), start_meta(run)
    if "model" in saved and not _same_start(saved, now):
        raise ResumeMismatchError(
            f"{ckpt.directory} holds step {step} of a run that started from "
            f"{_describe(saved)}, but this run starts from {_describe(now)}; "
            "give this run another out_dir, or set resume=False to start over (which deletes "
            "those checkpoints)"
        )
    return ckpt.restore(state, step), step


class ResumeMismatchError(SparError):
    """out_dir holds the checkpoints of a run that started from other weights."""


def start_meta(run: RunConfig) -> dict[str, Any]:
    """The weights a run starts from, saved with each checkpoint: a preset and its seed, or a
    checkpoint's absolute path."""
    if run.model in models.PRESETS:
        return {"model": run.model, "seed": run.seed}
    return {"model": os.path.abspath(run.model)}


def _same_start(saved: dict[str, Any], now: dict[str, Any]) -> bool:
    if now["model"] in models.PRESETS:
        return saved["model"] == now["model"] and saved.get("seed", now["seed"]) == now["seed"]
    # Checkpoints written before the path was made absolute hold it as given.
    return os.path.abspath(saved["model"]) == now["model"] or saved["model"] == now["model"]


def _describe(meta: dict[str, Any]) -> str:
    if "seed" in meta:
        return f"preset {meta['model']!r} (seed {meta['seed']})"
    return repr(meta["model"])


def batch_source(
    prepared: data.Prepared, run: RunConfig, placement: Placement
) -> Callable[[int, int], Iterator[dict]]:
    """``(epoch, start) -> iterator`` of this process's rows of each global batch."""

    def source(epoch: int, start: int) -> Iterator[dict]:
        return data.batches(
            prepared,
            run.batch_size,
            seed=run.seed,
            epoch=epoch,
            start=start,
            shuffle=run.shuffle,
            pad_to_multiple=run.pad_to_multiple,
            **placement.data_args(),
        )

    return source


def run_training(
    state: TrainState,
    train_step: Callable,
    prepared: data.Prepared,
    run: RunConfig,
    placement: Placement,
    *,
    kind: str,
    per_epoch: int,
    prepare: Callable | None = None,
    log: Callable[[str], None] = print,
) -> loop.LoopResult:
    """Resumes from ``out_dir/checkpoints`` when asked, then runs ``loop.run`` on the mesh with
    this process's rows of each batch.

    ``prepare`` turns a host batch into the step's input before it is sharded (default: drop
    ``index``).
    """
    ckpt = make_checkpointer(run)
    state, resumed = maybe_resume(state, ckpt, run, log)
    if resumed is not None:
        log(f"resumed from step {resumed} ({ckpt.directory})")
    prepare = prepare or loop.drop_index
    try:
        with placement.context():
            return loop.run(
                state,
                train_step,
                batch_source(prepared, run, placement),
                loop_config(run, per_epoch, kind),
                out_dir=run.out_dir,
                checkpointer=ckpt,
                prepare=lambda batch: placement.shard_batch(prepare(batch)),
                meta={"kind": kind, **start_meta(run)},
            )
    finally:
        ckpt.close()
