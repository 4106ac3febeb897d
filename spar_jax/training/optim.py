"""AdamW with the learning-rate schedules of Hugging Face's Trainer, from a frozen config.

SPaR's recipe (through LLaMA-Factory, i.e. the HF Trainer): the actor's DPO uses a linear decay
with 10% warmup at lr 2e-7, the refiner's SFT a constant schedule with warmup at 2e-6. The
schedules below reproduce ``transformers.get_*_schedule_with_warmup`` step for step (HF also
applies ``lr(0) = 0`` to the very first update when there is warmup), so a run here and a run
there see the same learning rates.

    opt = OptimizerConfig(learning_rate=2e-7, schedule="linear", warmup_ratio=0.1)
    tx, schedule = make_optimizer(opt, total_steps=1000)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from spar_jax.configs import ConfigError

SCHEDULES = ("linear", "constant", "cosine")


@dataclasses.dataclass(frozen=True, kw_only=True)
class OptimizerConfig:
    """AdamW hyper-parameters and the schedule (the defaults are the HF Trainer's)."""

    learning_rate: float = 2e-7
    schedule: str = "linear"  # linear decay | constant | cosine, each after a linear warmup
    warmup_ratio: float = 0.0  # fraction of the total optimizer steps spent warming up
    warmup_steps: int = 0  # overrides warmup_ratio when > 0
    weight_decay: float = 0.0  # decoupled; never applied to norm scales or biases
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    max_grad_norm: float = 1.0  # global-norm clipping; 0 turns it off

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule={self.schedule!r}; use one of {SCHEDULES}")
        if not 0.0 <= self.warmup_ratio <= 1.0:
            raise ConfigError(f"warmup_ratio={self.warmup_ratio} must be in [0, 1]")
        if self.learning_rate < 0 or self.max_grad_norm < 0 or self.warmup_steps < 0:
            raise ConfigError("learning_rate, max_grad_norm and warmup_steps must be >= 0")

    @classmethod
    def from_dict(cls, d: Any) -> OptimizerConfig:
        """From a mapping (e.g. the ``optimizer`` ConfigDict); unknown keys are an error."""
        d = dict(d)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown optimizer fields {unknown}; known: {sorted(known)}")
        return cls(**d)

    def num_warmup_steps(self, total_steps: int) -> int:
        """``ceil(warmup_ratio * total)`` as ``TrainingArguments.get_warmup_steps`` computes it."""
        if self.warmup_steps > 0:
            return self.warmup_steps
        return math.ceil(self.warmup_ratio * total_steps)


def make_schedule(cfg: OptimizerConfig, total_steps: int) -> optax.Schedule:
    """``count -> lr``; ``count`` is the number of optimizer updates already applied.

    ``lr * min(1, count / warmup)`` during warmup, then (``p`` = progress after warmup in [0, 1])
    ``1 - p`` (linear), ``1`` (constant) or ``(1 + cos(pi p)) / 2`` (cosine), as in HF.
    """
    total = max(int(total_steps), 1)
    warmup = cfg.num_warmup_steps(total)
    lr = cfg.learning_rate

    def schedule(count: jax.Array) -> jax.Array:
        count = jnp.asarray(count, jnp.float32)
        warm = count / max(warmup, 1)
        progress = (count - warmup) / max(total - warmup, 1)
        if cfg.schedule == "linear":
            after = jnp.maximum(0.0, 1.0 - progress)
        elif cfg.schedule == "cosine":
            after = jnp.maximum(0.0, 0.5 * (1.0 + jnp.cos(jnp.pi * jnp.clip(progress, 0.0, 1.0))))
        else:
            after = jnp.ones_like(count)
        return lr * jnp.where(count < warmup, warm, after)

    return schedule


def decay_mask(params: Any) -> Any:
    """True for the leaves weight decay applies to: every weight except norm scales and biases
    (the HF Trainer's rule; ``ndim`` cannot tell them apart here because scanned layers stack a
    leading layer axis onto the norm scales)."""

    def keep(path, _):
        names = [str(getattr(k, "key", k)) for k in path]
        return not any("norm" in n or n.endswith("bias") for n in names)

    return jax.tree_util.tree_map_with_path(keep, params)


def make_optimizer(
    cfg: OptimizerConfig, total_steps: int
) -> tuple[optax.GradientTransformation, Callable[[jax.Array], jax.Array]]:
    """``(tx, schedule)``: global-norm clipping then AdamW with the schedule.

    The clip comes first (as ``torch.nn.utils.clip_grad_norm_`` before ``optimizer.step()``).
    Gradient accumulation is not done here but by the train step (a ``lax.scan`` over
    micro-batches, see ``steps.py``), so ``tx`` sees one full-batch gradient per update.
    """
    schedule = make_schedule(cfg, total_steps)
    parts = []
    if cfg.max_grad_norm > 0:
        parts.append(optax.clip_by_global_norm(cfg.max_grad_norm))
    parts.append(
        optax.adamw(
            schedule,
            b1=cfg.b1,
            b2=cfg.b2,
            eps=cfg.eps,
            weight_decay=cfg.weight_decay,
            mask=decay_mask,
        )
    )
    return optax.chain(*parts), schedule
