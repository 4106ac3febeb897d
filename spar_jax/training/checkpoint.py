"""Train-state checkpoints (orbax ``CheckpointManager``) and param-only exports.

A checkpoint is the whole ``TrainState`` minus the frozen reference: params, optimizer state,
step and data position, plus a small JSON of run facts for the reader. Orbax writes each step into a
temporary directory and renames it when complete, so a run killed mid-save leaves the previous
checkpoint as the latest; the newest ``max_to_keep`` are kept.

    ckpt = Checkpointer(os.path.join(out_dir, "checkpoints"), max_to_keep=3)
    if ckpt.latest_step() is not None:
        state = ckpt.restore(abstract_state(state))   # continue where it stopped
    ckpt.save(state)
    ckpt.close()                                      # waits for an async save to finish

Exports for the next round write the params alone: ``export_params(cfg, params, dir, "native")``
(``models.native``, restored by ``load_native``) or ``"hf"`` (``models.save_hf``).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp

from spar_jax import models
from spar_jax.training.state import TrainState

EXPORT_FORMATS = ("native", "hf")


class Checkpointer:
    """Saves and restores ``TrainState`` under ``directory/<step>/``.

    Args:
      directory: created if missing.
      max_to_keep: number of newest checkpoints kept (older ones are deleted).
      async_save: write in a background thread; the arrays are copied to host memory before
        ``save`` returns, so the train step may donate (overwrite) them right after.
    """

    def __init__(self, directory: str, *, max_to_keep: int = 3, async_save: bool = True):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True, enable_async_checkpointing=async_save
        )
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=("state", "meta")
        )

    def latest_step(self) -> int | None:
        """Step of the newest complete checkpoint, or None."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, state: TrainState, meta: dict[str, Any] | None = None) -> int:
        """Saves ``state`` (without ``ref_params``) at step ``state.step``; returns the step."""
        ocp = self._ocp
        step = int(state.step)
        meta = dict(meta or {})
        meta.update(step=step, epoch=int(state.epoch), batch_index=int(state.batch_index))
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state.without_reference()),
                meta=ocp.args.JsonSave(meta),
            ),
            force=True,
        )
        return step

    def restore(self, target: TrainState, step: int | None = None) -> TrainState:
        """The state saved at ``step`` (default: the latest), laid out like ``target``.

        ``target`` is a state or its ``abstract_state`` (shapes, dtypes and shardings); its
        ``ref_params`` are carried over into the result, not read from disk.
        """
        ocp = self._ocp
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"{self.directory}: no checkpoint to restore")
        abstract = abstract_state(target.without_reference())
        restored = self._manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
        )
        return restored["state"].replace(ref_params=target.ref_params)

    def meta(self, step: int) -> dict[str, Any]:
        """The JSON facts saved with the checkpoint at ``step`` (``save``'s ``meta``)."""
        ocp = self._ocp
        restored = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return dict(restored["meta"] or {})

    def restore_params(self, step: int) -> Any:
        """The params saved at ``step``, as single-device arrays, without rebuilding a state:
        for reading a run's intermediate models (evaluation over training steps)."""
        ocp = self._ocp
        restored = self._manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore())
        )
        return restored["state"]["params"]

    def delete_all(self) -> None:
        """Deletes every checkpoint in the directory (a run that starts over)."""
        for step in self.all_steps():
            self._manager.delete(step)

    def wait(self) -> None:
        """Blocks until an async save in flight is on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def abstract_state(state: Any) -> Any:
    """``jax.ShapeDtypeStruct`` leaves (with shardings) for a state or any pytree of arrays."""

    def leaf(x):
        if isinstance(x, jax.ShapeDtypeStruct):
            return x
        x = jnp.asarray(x) if not isinstance(x, jax.Array) else x
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)

    return jax.tree.map(leaf, state)


def export_params(cfg: models.ModelConfig, params: Any, path: str, fmt: str = "native") -> str:
    """Writes the params alone for the next round; returns ``path``.

    Args:
      cfg: the model config to record (use the loaded one, not a bfloat16-compute variant,
        unless you want the export to compute in bfloat16 by default).
      params: parameter pytree (the float32 master weights; ``param_dtype`` of ``cfg`` decides
        what ``save_hf`` writes).
      path: output directory.
      fmt: "native" (orbax, ``models.native.load_native``) or "hf" (safetensors +
        config.json, ``models.load_hf`` / ``transformers.from_pretrained``).
    """
    from spar_jax.models import native

    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"export format {fmt!r}; use one of {EXPORT_FORMATS}")
    params = jax.tree.map(lambda x: x.astype(cfg.weight_dtype), params)
    if fmt == "native":
        native.save_native(cfg, params, path)  # orbax: every process writes its shards
    else:
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            params = multihost_utils.process_allgather(params, tiled=True)
        if jax.process_index() == 0:
            models.save_hf(cfg, params, path)
    return path
