"""What the DPO and SFT trainers share: the config boundary, model loading, resume, export.

The experiment config (an ml_collections ``ConfigDict``, see ``configs/dpo_demo.py``) becomes
plain values here and nowhere else; the trainers then only call library functions.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from spar_jax import models, sharding
from spar_jax.configs import ConfigError
from spar_jax.errors import MissingFileError
from spar_jax.training import checkpoint, optim, steps
from spar_jax.training.loop import LoopConfig
from spar_jax.training.placement import Placement
from spar_jax.training.state import TrainState

COMPUTE_DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunConfig:
    """The fields both trainers read from the experiment config (see ``configs/*_demo.py``)."""

    model: str  # preset name, HF checkpoint dir, or native checkpoint dir (model_config.json)
    tokenizer: str  # tokenizer dir / .model file; "" = the model dir
    data: Any  # path, glob, or list of them
    out_dir: str
    max_length: int
    max_prompt_length: int | None
    batch_size: int  # examples per optimizer step (all micro-batches together)
    grad_accum_steps: int  # micro-batches per step; batch_size must divide by it
    epochs: int
    max_steps: int  # 0 = all epochs
    checkpoint_every: int  # 0 = only at the end
    keep_checkpoints: int
    async_checkpoint: bool
    resume: bool  # continue from out_dir/checkpoints when it holds a checkpoint
    export: tuple[str, ...]  # param-only exports at the end: "native", "hf"
    seed: int
    shuffle: bool
    pad_to_multiple: int
    compute_dtype: str  # float32 | bfloat16 (params and optimizer stay float32)
    remat: str  # none | full | dots | dots_no_batch
    chunk_size: int  # vocabulary chunk of the log-softmax
    attention: str  # auto | xla | cudnn | xla_causal (models.ModelConfig.attention)
    scan_unroll: int  # layers per layer-scan iteration (models.ModelConfig.scan_unroll)
    vocab_size: int  # presets only: 0 = the tokenizer's vocabulary rounded up to 64
    strict: bool  # a malformed record is an error instead of a counted skip
    progress: bool
    fast_compile: bool  # XLA optimisation level 0: compiles ~3x faster, runs slower (demos)
    optimizer: optim.OptimizerConfig
    mesh: tuple[int, ...] = (1, -1, 1)  # (data, fsdp, tensor) sizes; -1 = the rest of the devices
    sharding_rules: Any = "train"  # rule-set name or (logical name, mesh axes) pairs

    def __post_init__(self):
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ConfigError(f"compute_dtype={self.compute_dtype!r}; use one of {COMPUTE_DTYPES}")
        if self.grad_accum_steps < 1 or self.batch_size % self.grad_accum_steps:
            raise ConfigError(
                f"batch_size={self.batch_size} must be a multiple of grad_accum_steps="
                f"{self.grad_accum_steps} (batch_size counts examples per optimizer step)"
            )
        for fmt in self.export:
            if fmt not in checkpoint.EXPORT_FORMATS:
                raise ConfigError(
                    f"export={self.export!r}; formats are {checkpoint.EXPORT_FORMATS}"
                )
        if not self.data:
            raise ConfigError("--config.data is required: a JSON/JSONL/Parquet file, glob or list")
        if not self.out_dir:
            raise ConfigError("--config.out_dir is required")

    @classmethod
    def from_config(cls, config: Any) -> RunConfig:
        data = config.data
        if isinstance(data, list | tuple):
            data = [str(d) for d in data]
        return cls(
            model=config.model,
            tokenizer=config.tokenizer or config.model,
            data=data,
            out_dir=config.out_dir,
            max_length=config.max_length,
            max_prompt_length=config.max_prompt_length or None,
            batch_size=config.batch_size,
            grad_accum_steps=config.grad_accum_steps,
            epochs=config.epochs,
            max_steps=config.max_steps,
            checkpoint_every=config.checkpoint_every,
            keep_checkpoints=config.keep_checkpoints,
            async_checkpoint=config.async_checkpoint,
            resume=config.resume,
            export=tuple(config.export),
            seed=config.seed,
            shuffle=config.shuffle,
            pad_to_multiple=config.pad_to_multiple,
            compute_dtype=config.compute_dtype,
            remat=config.remat,
            chunk_size=config.chunk_size,
            attention=config.get("attention", "auto"),
            scan_unroll=config.get("scan_unroll", 1),
            vocab_size=config.vocab_size,
            strict=config.strict,
            progress=config.progress,
            fast_compile=config.get("fast_compile", False),
            optimizer=optim.OptimizerConfig.from_dict(config.optimizer.to_dict()),
            mesh=tuple(config.get("mesh", (1, -1, 1))),
            sharding_rules=config.get("sharding_rules", "train"),
        )


def with_toy_data(config: Any, kind: str) -> Any:
    """``config`` with the toy world (``training.toy``, written under ``config.toy_dir`` once)
    in its empty ``tokenizer`` / ``data`` / ``eval_data`` when ``toy_data`` is on and ``data``
    is empty (real data always comes with its own tokenizer)."""
    if not config.get("toy_data", False) or config.data:
        return config
    config = config.copy_and_resolve_references()
    empty = [k for k in ("tokenizer", "data", "eval_data") if k in config and not config[k]]
    from spar_jax.training import toy

    paths = toy.write_demo(config.toy_dir)
    filled = {"tokenizer": paths["tokenizer"], "data": paths[kind], "eval_data": paths["dpo_eval"]}
    for key in empty:
        config[key] = filled[key]
    return config


def load_model(
    spec: str, *, vocab_size: int, seed: int, placement: Placement
) -> tuple[models.ModelConfig, Any]:
    """``(cfg, float32 params)`` from a preset name, a native dir or a Hugging Face dir,
    placed straight onto ``placement``'s mesh by the parameter rules (a model larger than
    one device never has to fit on one).

    A preset starts from random weights (``seed``) with ``vocab_size`` tokens, for demos.
    """

    def shardings(cfg):
        return sharding.param_shardings(cfg, placement.mesh, placement.rules)

    if spec in models.PRESETS:
        from spar_jax.training import toy

        cfg = models.preset(spec, **({"vocab_size": vocab_size} if vocab_size else {}))
        return cfg, jax.device_put(toy.random_params(cfg, seed), shardings(cfg))
    if os.path.isfile(os.path.join(spec, "model_config.json")):
        from spar_jax.models import native

        cfg = native.load_config(spec)
        cfg, params = native.load_native(spec, shardings(cfg))
        params = jax.tree.map(lambda x: x.astype(jnp.float32), params)
        return cfg.replace(param_dtype="float32"), params
    if os.path.isdir(spec):
        return models.load_hf(spec, dtype=jnp.float32, shardings=shardings)
    raise MissingFileError(
        f"model {spec!r} is neither a preset ({', '.join(sorted(models.PRESETS))}) nor a "
        "checkpoint directory; set --config.model"
    )


def preset_vocab(tokenizer_vocab: int, configured: int) -> int:
    """The vocabulary of a preset model: the configured one, or the tokenizer's rounded to 64."""
    return configured or -(-tokenizer_vocab // 64) * 64


def compute_config(cfg: models.ModelConfig, run: RunConfig) -> models.ModelConfig:
    """The config the step runs with: compute dtype, remat, attention, unroll; params untouched."""
    return cfg.replace(
        dtype=run.compute_dtype,
        remat_policy=run.remat,
        attention=run.attention,
        scan_unroll=run.scan_unroll,
    )


def loop_config(run: RunConfig, batches_per_epoch: int, desc: str) -> LoopConfig:
    return LoopConfig(
        epochs=run.epochs,
        batches_per_epoch=batches_per_epoch,
        max_steps=run.max_steps,
        checkpoint_every=run.checkpoint_every,
        desc=desc,
        progress=run.progress,
    )


def make_checkpointer(run: RunConfig) -> checkpoint.Checkpointer:
    return checkpoint.Checkpointer(
        os.path.join(run.out_dir, "checkpoints"),
        max_to_keep=run.keep_checkpoints,
        async_save=run.async_checkpoint,
    )


def maybe_resume(
    state: TrainState, ckpt: checkpoint.Checkpointer, run: RunConfig
) -> tuple[TrainState, int | None]:
    """The latest checkpoint's state when ``run.resume`` and one exists; else ``state``."""
    step = ckpt.latest_step()
    if not run.resume or step is None:
        return state, None
    return ckpt.restore(state, step), step


def export(cfg: models.ModelConfig, params: Any, run: RunConfig) -> dict[str, str]:
    """Param-only exports for the next round under ``out_dir/final_<format>``."""
    out = {}
    for fmt in run.export:
        out[fmt] = checkpoint.export_params(
            cfg, params, os.path.join(run.out_dir, f"final_{fmt}"), fmt
        )
    return out


def copy_tree(tree: Any) -> Any:
    """Fresh buffers for ``tree``: needed when one copy is donated to the step and one is not."""
    return jax.tree.map(jnp.copy, tree)


def _frozen(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((k, _frozen(v)) for k, v in value.items()))
    return value


def placement_for(run: RunConfig) -> Placement:
    """The run's mesh (all global devices) and rules."""
    return _placement(run.mesh, _frozen(run.sharding_rules))


@functools.lru_cache(maxsize=4)
def _placement(mesh, rules):
    rules = rules if isinstance(rules, str) else tuple(rules)
    return Placement.from_config(mesh, rules)


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

    The step is jitted with in/out shardings from ``placement`` (state by the parameter
    rules, batch rows on the data-parallel axes). Memoised on every argument, so a process
    that trains several times with the same model and settings (rounds driven from Python,
    a killed run resumed in a notebook, tests) compiles the step once.
    """
    frozen = tuple(sorted((k, _frozen(v)) for k, v in options.items()))
    return _train_step(
        kind,
        cfg,
        run.optimizer,
        total_steps,
        run.grad_accum_steps,
        run.chunk_size,
        run.fast_compile,
        placement,
        frozen,
    )


@functools.lru_cache(maxsize=8)
def _train_step(kind, cfg, opt, total_steps, accum_steps, chunk_size, fast, placement, frozen):
    tx, schedule = optim.make_optimizer(opt, total_steps)
    options = {k: dict(v) if k == "loss_kwargs" else v for k, v in frozen}
    common = dict(schedule=schedule, accum_steps=accum_steps, chunk_size=chunk_size)
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
        compiler_options=steps.FAST_COMPILE if fast else None,
    )
    return tx, schedule, compiled, state_sharding


@functools.lru_cache(maxsize=8)
def reference_fn_for(
    cfg: models.ModelConfig, chunk_size: int, fast: bool, placement: Placement
) -> Callable:
    """``fn(params, numpy batch) -> (chosen [B], rejected [B])`` host arrays: the jitted
    ``steps.make_reference_fn`` with params sharded by the rules, batch rows on the
    data-parallel axes and replicated results (every process reads them all)."""
    options = steps.FAST_COMPILE if fast else None
    batch_sharding = placement.batch_sharding()
    jitted = jax.jit(
        steps.make_reference_fn(cfg, chunk_size=chunk_size),
        in_shardings=(
            sharding.param_shardings(cfg, placement.mesh, placement.rules),
            batch_sharding,
        ),
        out_shardings=placement.replicated(),
        compiler_options=options,
    )

    def reference(params: Any, batch: Any) -> Any:
        # The same host batch on every process: each keeps its rows.
        return jitted(params, jax.device_put(dict(batch), batch_sharding))

    return reference


def load_placed_model(
    run: RunConfig, tokenizer_vocab: int, *, task: str, reference: str = "precompute", log=print
) -> tuple[models.ModelConfig, models.ModelConfig, Any, Placement]:
    """``(base cfg, compute cfg, params on the mesh, placement)``, after the memory plan
    says the run fits (``placement.check_fits``)."""
    from spar_jax.training.placement import check_fits

    placement = placement_for(run)
    base_cfg, params = load_model(
        run.model,
        vocab_size=preset_vocab(tokenizer_vocab, run.vocab_size),
        seed=run.seed,
        placement=placement,
    )
    cfg = compute_config(base_cfg, run)
    log(f"model {run.model}: {models.count_params(cfg):,} parameters, compute {cfg.dtype}")
    check_fits(cfg, placement, task=task, run=run, reference=reference, log=log)
    return base_cfg, cfg, params, placement


def batch_source(prepared: Any, run: RunConfig, placement: Placement) -> Callable:
    """``(epoch, start) -> iterator`` of this process's rows of each global batch."""
    from spar_jax.training import data

    def source(epoch: int, start: int):
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
    prepared: Any,
    run: RunConfig,
    placement: Placement,
    *,
    kind: str,
    per_epoch: int,
    prepare: Callable | None = None,
    log: Callable[[str], None] = print,
) -> Any:
    """Resumes from ``out_dir/checkpoints`` when asked, then runs ``loop.run`` on the mesh with
    this process's rows of each batch; returns the ``loop.LoopResult``.

    ``prepare`` turns a host batch into the step's input before it is sharded (default: drop
    ``index``).
    """
    from spar_jax.training import loop

    ckpt = make_checkpointer(run)
    state, resumed = maybe_resume(state, ckpt, run)
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
