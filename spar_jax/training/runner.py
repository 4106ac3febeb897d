"""What the DPO and SFT trainers do the same way once their step is built: resume from the
run's checkpoints, feed each process its rows of every batch, and run the loop on the mesh.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

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
    this run's latest.
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
    return ckpt.restore(state, step), step


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
                meta={"kind": kind, "model": run.model},
            )
    finally:
        ckpt.close()
