"""Where a training run's arrays live: the mesh, the rules, and the host <-> device moves.

The trainers stay single-program: they build the state and batches as on one
device, and `Placement` shards them over the mesh from the config (`mesh`,
`sharding_rules`). One process or many: each process reads its own rows of
every global batch (`data.batches(..., process_index, process_count)`) and
`shard_batch` stitches them into global arrays.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from spar_jax import errors, sharding
from spar_jax import plan as planner
from spar_jax.training.state import TrainState


@dataclasses.dataclass(frozen=True)
class Placement:
    mesh: Mesh
    rules: sharding.Rules

    @classmethod
    def from_config(cls, mesh_shape, rules="train") -> Placement:
        return cls(sharding.make_mesh(tuple(mesh_shape)), sharding.rules_from_config(rules))

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.mesh.shape[a] for a in sharding.AXES)

    @property
    def data_parallel(self) -> int:
        return sharding.data_parallel_size(self.mesh, self.rules)

    def batch_sharding(self) -> NamedSharding:
        """One sharding for every batch field: rows on the data-parallel axes."""
        return NamedSharding(self.mesh, sharding.batch_spec(self.rules, 1))

    def state_sharding(self, cfg, tx, state) -> Any:
        return state_shardings(cfg, tx, state, self.mesh, self.rules)

    def place_state(self, state, shardings) -> Any:
        """The state on the mesh. With several processes each one holds the same host values
        (same checkpoint, same seed) and keeps only its shards."""
        if jax.process_count() > 1:
            # device_put cannot move an array committed to one local device onto devices of
            # other processes; from host memory every process slices out its own part.
            def host(x):
                local = isinstance(x, jax.Array) and x.is_fully_addressable
                return np.asarray(x) if local else x

            state = jax.tree.map(host, state)
        return jax.device_put(state, shardings)

    def shard_batch(self, batch) -> dict[str, jax.Array]:
        return sharding.shard_batch(batch, self.mesh, self.rules)

    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec())

    def context(self):
        return sharding.context(self.mesh, self.rules)

    def data_args(self) -> dict[str, int]:
        """The `data.batches` arguments that give this process its rows."""
        return dict(
            data_parallel=self.data_parallel,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )


def state_shardings(
    cfg, tx, state: TrainState, mesh: Mesh, rules: sharding.Rules = sharding.TRAIN_RULES
) -> TrainState:
    """Shardings for a ``TrainState`` (abstract or concrete), as a ``TrainState`` of them.

    Params and their optimizer moments follow the parameter rules; the step and the data
    position are replicated; the online DPO reference (if any) is sharded like the params.
    """
    params = sharding.param_shardings(cfg, mesh, rules)
    replicated = NamedSharding(mesh, PartitionSpec())
    shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state.params)
    return state.replace(
        step=replicated,
        params=params,
        opt_state=sharding.optimizer_shardings(tx, shapes, params, mesh),
        epoch=replicated,
        batch_index=replicated,
        ref_params=None if state.ref_params is None else params,
    )


def device_memory_bytes() -> int | None:
    """Memory of one device when the backend reports it (GPU, TPU); None on CPU."""
    try:
        stats = jax.devices()[0].memory_stats() or {}
    except (NotImplementedError, RuntimeError):
        return None
    return stats.get("bytes_limit")


def check_fits(cfg, placement: Placement, *, task: str, run, reference="precompute", log=print):
    """Refuses, before anything big is allocated, a run the planner says cannot fit."""
    device = device_memory_bytes()
    result = planner.plan(
        cfg,
        placement.shape,
        task=task,
        batch_size=run.batch_size,
        length=run.max_length,
        grad_accum_steps=run.grad_accum_steps,
        chunk_size=run.chunk_size,
        reference=reference,
    )
    if device is None:
        return result
    if not result.fits(device):
        raise errors.DoesNotFitError(
            f"this {task} run does not fit: {result.format(device)}\n"
            "lower batch_size, raise grad_accum_steps, set remat=full, compute in bfloat16, "
            "or use more devices (python -m spar_jax plan shows the numbers)"
        )
    log(f"memory plan: {planner.size_str(result.total)} of {planner.size_str(device)} per device")
    return result
