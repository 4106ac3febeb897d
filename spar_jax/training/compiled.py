"""The trainers' jitted functions, placed on the mesh: the train step and the reference pass.

Each call builds and jits afresh, from the arguments alone (the loss is the registered object,
not its name), so a loss re-registered under the same name, or any other change, is compiled
again. A process that trains many times with identical settings can keep XLA's executables
with JAX's persistent compilation cache (``jax_compilation_cache_dir``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax

from spar_jax import models, sharding
from spar_jax.training import optim, steps
from spar_jax.training.placement import Placement
from spar_jax.training.run_config import RunConfig
from spar_jax.training.state import TrainState

# ``fast_compile`` (demos): XLA's backend optimisation level 0 compiles a tiny model about 3x
# faster, for slower code.
_FAST_COMPILE = {"xla_backend_optimization_level": 0}


def _compiler_options(run: RunConfig) -> Mapping[str, Any] | None:
    return _FAST_COMPILE if run.fast_compile else None


def train_step_for(
    kind: str,
    cfg: models.ModelConfig,
    run: RunConfig,
    total_steps: int,
    placement: Placement,
    **options: Any,
) -> tuple[Any, Callable, Callable, Any]:
    """``(tx, schedule, compiled train_step, state shardings)`` for ``kind`` "dpo"
    (``options``: the ``make_dpo_step`` loss arguments) or "sft".

    The step is jitted with in/out shardings from ``placement``: the state by the parameter
    rules, batch rows on the data-parallel axes.
    """
    tx, schedule = optim.make_optimizer(run.optimizer, total_steps)
    common = dict(schedule=schedule, accum_steps=run.grad_accum_steps, chunk_size=run.chunk_size)
    if kind == "dpo":
        fn = steps.make_dpo_step(cfg, tx, **common, **options)
    else:
        fn = steps.make_sft_step(cfg, tx, **common, **options)
    online = options.get("reference") == "online"
    shapes = models.param_shapes(cfg.replace(param_dtype="float32"))
    abstract = jax.eval_shape(
        lambda p: TrainState.create(p, tx, ref_params=p if online else None), shapes
    )
    state_sharding = placement.state_sharding(cfg, tx, abstract)
    compiled = steps.compile_step(
        fn,
        state_sharding,
        placement.batch_sharding(),
        compiler_options=_compiler_options(run),
    )
    return tx, schedule, compiled, state_sharding


def reference_fn_for(cfg: models.ModelConfig, run: RunConfig, placement: Placement) -> Callable:
    """``fn(params, numpy batch) -> (chosen [B], rejected [B])``: the jitted
    ``steps.make_reference_fn`` with params sharded by the rules, batch rows on the
    data-parallel axes and replicated results (every process reads them all)."""
    batch_sharding = placement.batch_sharding()
    jitted = jax.jit(
        steps.make_reference_fn(cfg, chunk_size=run.chunk_size),
        in_shardings=(
            sharding.param_shardings(cfg, placement.mesh, placement.rules),
            batch_sharding,
        ),
        out_shardings=placement.replicated(),
        compiler_options=_compiler_options(run),
    )

    def reference(params: Any, batch: Any) -> Any:
        # The same host batch on every process: each keeps its rows.
        return jitted(params, jax.device_put(dict(batch), batch_sharding))

    return reference
