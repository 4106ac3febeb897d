"""The experiment config's boundary: an ml_collections ``ConfigDict`` becomes a frozen
``RunConfig`` here and nowhere else (see ``configs/dpo_demo.py``); the trainers then only call
library functions with plain values.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from spar_jax import models
from spar_jax.configs import ConfigError
from spar_jax.training import checkpoint, optim
from spar_jax.training.loop import LoopConfig

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
    """How long ``loop.run`` trains and how often it saves."""
    return LoopConfig(
        epochs=run.epochs,
        batches_per_epoch=batches_per_epoch,
        max_steps=run.max_steps,
        checkpoint_every=run.checkpoint_every,
        desc=desc,
        progress=run.progress,
    )
