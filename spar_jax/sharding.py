"""Device meshes, logical-axis rules and multi-host setup.

Sharding is data: parameters and activations carry logical axis names
(`models.logical_axes(cfg)`), and a rule table maps each name to mesh axes
(`data`, `fsdp`, `tensor`). The same code then runs on one CPU, 8 GPUs or a
TPU pod under `jax.jit` with `NamedSharding`.

    mesh = sharding.make_mesh((1, -1, 1))                   # all devices on fsdp
    shardings = sharding.param_shardings(cfg, mesh, sharding.TRAIN_RULES)
    params = jax.device_put(params, shardings)

Training shards weights over `fsdp` (ZeRO-3 style: gathered per layer inside
the scan) and over `tensor` (Megatron-style heads / MLP split). Sampling
replicates weights across `fsdp` (`SAMPLE_RULES`): the decode loop would
otherwise all-gather every weight at every token.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from spar_jax.errors import SparError

log = logging.getLogger(__name__)

AXES = ("data", "fsdp", "tensor")
Rules = tuple[tuple[str, str | tuple[str, ...] | None], ...]

# Logical name -> mesh axis (or axes, or None = replicated).
TRAIN_RULES: Rules = (
    ("batch", ("data", "fsdp")),
    ("layers", None),
    ("embed", "fsdp"),
    ("vocab", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("mlp", "tensor"),
    ("norm", None),
    ("length", None),
    ("cache_length", None),
    ("act_embed", None),
    ("act_vocab", "tensor"),
)
SAMPLE_RULES: Rules = tuple(
    (name, None) if name == "embed" else (name, axes) for name, axes in TRAIN_RULES
)
RULE_SETS = {"train": TRAIN_RULES, "sample": SAMPLE_RULES}


class ShardingError(SparError, ValueError):
    """A mesh, rule table or batch that does not fit; the message names the numbers."""


def mesh_shape(shape: Sequence[int], num_devices: int) -> tuple[int, ...]:
    """Resolves one -1 in `shape` to "the rest of the devices"."""
    shape = tuple(int(s) for s in shape)
    if len(shape) != len(AXES):
        raise ShardingError(f"mesh shape {shape} must have {len(AXES)} entries for axes {AXES}")
    if shape.count(-1) > 1 or any(s == 0 or s < -1 for s in shape):
        raise ShardingError(f"mesh shape {shape}: use positive sizes and at most one -1")
    known = math.prod(s for s in shape if s != -1)
    if -1 in shape:
        if num_devices % known:
            raise ShardingError(
                f"mesh shape {shape}: {num_devices} devices are not divisible by {known}"
            )
        shape = tuple(num_devices // known if s == -1 else s for s in shape)
    if math.prod(shape) != num_devices:
        raise ShardingError(
            f"mesh shape {dict(zip(AXES, shape, strict=True))} needs {math.prod(shape)} devices, "
            f"but {num_devices} are available; change the mesh (use -1 for 'the rest')"
        )
    return shape


def make_mesh(shape: Sequence[int] = (1, -1, 1), devices: Sequence[Any] | None = None) -> Mesh:
    """A (data, fsdp, tensor) mesh over `devices` (default: all global devices)."""
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape(shape, len(devices))
    try:
        from jax.experimental import mesh_utils

        grid = mesh_utils.create_device_mesh(shape, devices=devices)
    except (ValueError, NotImplementedError, AssertionError):
        grid = np.array(devices).reshape(shape)
    return Mesh(grid, AXES)


def context(mesh: Mesh, rules: Rules):
    """The mesh plus flax's logical-axis rules, for activation constraints inside jit."""
    import contextlib

    import flax.linen as nn

    stack = contextlib.ExitStack()
    stack.enter_context(mesh)
    stack.enter_context(nn.logical_axis_rules(rules))
    return stack


def rules_from_config(rules: Any) -> Rules:
    """Accepts a rule-set name ("train"/"sample"), a sequence of (name, axes) pairs, or a
    mapping of name to axes."""
    if isinstance(rules, str):
        if rules not in RULE_SETS:
            raise ShardingError(f"unknown rule set {rules!r}; known: {sorted(RULE_SETS)}")
        return RULE_SETS[rules]
    if hasattr(rules, "items"):
        rules = list(rules.items())
    out = []
    for name, axes in rules:
        if isinstance(axes, list):
            axes = tuple(axes)
        for a in (axes,) if isinstance(axes, str) else axes or ():
            if a not in AXES:
                raise ShardingError(f"rule {name!r} -> {axes!r}: {a!r} is not a mesh axis {AXES}")
        out.append((name, axes))
    return tuple(out)


def logical_to_mesh(
    spec: PartitionSpec,
    rules: Rules,
    shape: Sequence[int] | None = None,
    mesh: Mesh | None = None,
    what: str = "",
) -> PartitionSpec:
    """Maps a PartitionSpec of logical names to one of mesh axes.

    A logical name with no rule is an error. A dimension that the mapped
    mesh axes do not divide (e.g. GLM-4's 2 KV heads on tensor=4) is
    replicated, and logged: a silent wrong answer is worse than a copy.
    """
    table = dict(rules)
    used: set[str] = set()
    out = []
    for i, name in enumerate(spec):
        if name is None:
            out.append(None)
            continue
        if name not in table:
            raise ShardingError(
                f"{what or 'array'}: logical axis {name!r} has no sharding rule; add "
                f"({name!r}, <mesh axes or None>) to the rules (known: {sorted(table)})"
            )
        axes = table[name]
        axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
        axes = tuple(a for a in axes if a not in used)  # a mesh axis shards one dim at most
        if mesh is not None:
            axes = tuple(a for a in axes if mesh.shape[a] > 1)
        if axes and shape is not None and mesh is not None:
            size = math.prod(mesh.shape[a] for a in axes)
            if shape[i] % size:
                log.info(
                    "%s: dim %d (%s=%d) not divisible by %s=%d; replicated",
                    what,
                    i,
                    name,
                    shape[i],
                    axes,
                    size,
                )
                axes = ()
        used.update(axes)
        out.append(None if not axes else axes[0] if len(axes) == 1 else axes)
    return PartitionSpec(*out)


def tree_shardings(logical: Any, shapes: Any, mesh: Mesh, rules: Rules) -> Any:
    """NamedShardings for a pytree, given its logical specs and its shapes."""
    is_spec = lambda x: isinstance(x, PartitionSpec)  # noqa: E731
    flat_specs, treedef = jax.tree_util.tree_flatten_with_path(logical, is_leaf=is_spec)
    flat_shapes = treedef.flatten_up_to(shapes)
    out = []
    for (path, spec), s in zip(flat_specs, flat_shapes, strict=True):
        name = jax.tree_util.keystr(path)
        out.append(NamedSharding(mesh, logical_to_mesh(spec, rules, s.shape, mesh, name)))
    return treedef.unflatten(out)


def param_shardings(cfg, mesh: Mesh, rules: Rules = TRAIN_RULES) -> Any:
    """NamedSharding for every parameter of `cfg` (a pytree matching the params)."""
    from spar_jax import models

    return tree_shardings(models.logical_axes(cfg), models.param_shapes(cfg), mesh, rules)


def optimizer_shardings(optimizer, params_shapes: Any, shardings: Any, mesh: Mesh) -> Any:
    """Shardings of `optimizer.init(params)`: moments follow their parameter, scalars replicate."""
    import optax

    state_shapes = jax.eval_shape(optimizer.init, params_shapes)
    replicated = NamedSharding(mesh, PartitionSpec())
    return optax.tree_map_params(
        optimizer,
        lambda _, s: s,
        state_shapes,
        shardings,
        transform_non_params=lambda _: replicated,
    )


def batch_shardings(batch: dict[str, Any], mesh: Mesh, rules: Rules = TRAIN_RULES) -> dict:
    """A NamedSharding per batch field: rows on the data-parallel axes."""
    return {k: NamedSharding(mesh, batch_spec(rules, np.ndim(v))) for k, v in batch.items()}


def batch_spec(rules: Rules, ndim: int) -> PartitionSpec:
    """Leading (batch) axis on the data-parallel axes, the rest replicated."""
    return logical_to_mesh(PartitionSpec("batch", *([None] * (ndim - 1))), rules)


def data_parallel_size(mesh: Mesh, rules: Rules = TRAIN_RULES) -> int:
    axes = dict(rules)["batch"]
    axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
    return math.prod(mesh.shape[a] for a in axes)


def shard_batch(
    batch: dict[str, np.ndarray], mesh: Mesh, rules: Rules = TRAIN_RULES
) -> dict[str, jax.Array]:
    """Places a host batch on the mesh, sharded along its leading axis.

    Single process: `batch` is the global batch. Several processes: each
    passes its own rows and they are stitched into one global array.
    """
    dp = data_parallel_size(mesh, rules)
    out = {}
    for key, value in batch.items():
        value = np.asarray(value)
        rows = value.shape[0] * jax.process_count()
        if rows % dp:
            raise ShardingError(
                f"batch field {key!r}: global batch of {rows} rows is not divisible by the "
                f"data-parallel size {dp}; pad the batch to a multiple of {dp}"
            )
        sharding = NamedSharding(mesh, batch_spec(rules, value.ndim))
        if jax.process_count() == 1:
            out[key] = jax.device_put(value, sharding)
        else:
            out[key] = jax.make_array_from_process_local_data(sharding, value)
    return out


# ---------------------------------------------------------------------------
# Multi-host


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    cpu_collectives: bool | None = None,
) -> bool:
    """Starts JAX's multi-host runtime when the environment asks for it.

    Explicit arguments win; then `SPAR_COORDINATOR` / `SPAR_NUM_PROCESSES` /
    `SPAR_PROCESS_ID`; then JAX's own cluster detection (TPU pods, SLURM,
    Open MPI) when `SPAR_DISTRIBUTED=auto`. Returns True when initialized;
    a plain single-process run returns False and changes nothing.
    """
    env = os.environ
    coordinator_address = coordinator_address or env.get("SPAR_COORDINATOR")
    if num_processes is None and env.get("SPAR_NUM_PROCESSES"):
        num_processes = int(env["SPAR_NUM_PROCESSES"])
    if process_id is None and env.get("SPAR_PROCESS_ID"):
        process_id = int(env["SPAR_PROCESS_ID"])
    auto = env.get("SPAR_DISTRIBUTED") == "auto"
    if coordinator_address is None and not auto:
        return False
    if coordinator_address is not None and (num_processes is None or process_id is None):
        raise ShardingError(
            f"coordinator {coordinator_address!r} given without num_processes/process_id; set "
            "SPAR_NUM_PROCESSES and SPAR_PROCESS_ID (or SPAR_DISTRIBUTED=auto on a TPU pod / SLURM)"
        )
    if cpu_collectives is None:
        cpu_collectives = env.get("JAX_PLATFORMS", "") == "cpu"
    if cpu_collectives:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    # Under SLURM, JAX's cluster detection would otherwise bind each process
    # to the one GPU numbered SLURM_LOCALID; launch/slurm.sbatch sets this.
    local = env.get("JAX_LOCAL_DEVICE_IDS")
    local_ids = [int(i) for i in local.split(",")] if local else None
    jax.distributed.initialize(
        coordinator_address, num_processes, process_id, local_device_ids=local_ids
    )
    log.info(
        "process %d of %d, %d global devices",
        jax.process_index(),
        jax.process_count(),
        jax.device_count(),
    )
    return True
