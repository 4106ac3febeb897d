"""The registry of preference losses, and the combined loss and metrics the DPO step reports.

A registered loss is a ``PreferenceLoss``: the per-example function plus what the trainer must
know to call it and to report its rewards, declared rather than read from its signature::

    per_example, metrics = preference_loss(
        "sigmoid",
        policy_chosen_logps=pc, policy_rejected_logps=pr,
        reference_chosen_logps=rc, reference_rejected_logps=rr,
        chosen_lengths=nc, rejected_lengths=nr,
        beta=0.1, ftx_weight=0.1, mask=example_weight,
    )
    loss = jnp.sum(per_example) / jnp.sum(example_weight)

How to add a loss: write one pure function returning ``[B]`` float32 and register it (or add
one line to ``PREFERENCE_LOSSES`` below); then select it in the config by name
(``--config.loss.name``). The README has a worked example.

    register("my_loss", my_loss, hyperparameters={"beta": 0.1})

It is called as ``fn(policy_chosen_logps, policy_rejected_logps, [reference_chosen_logps,
reference_rejected_logps,] [chosen_lengths=, rejected_lengths=,] **hyperparameters)``: the
reference log-probs when ``uses_reference``, the token counts when ``length_normalized``, and
every declared hyper-parameter (its default unless the config sets it). No mask is passed:
``preference_loss`` applies the example weights to the result, once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from spar_jax.training import losses
from spar_jax.training.losses import apply_mask, masked_mean, per_token


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class PreferenceLoss:
    """A registered preference loss (compared by identity: a re-registered loss is new).

    Attributes:
      fn: the per-example loss, ``[B]`` float32 (see the module docstring for its arguments).
      hyperparameters: every keyword hyper-parameter ``fn`` takes, with its default.
      uses_reference: ``fn`` takes the reference log-probs (False: reference-free).
      length_normalized: ``fn`` takes ``chosen_lengths`` / ``rejected_lengths`` and works on
        mean token log-probs; its reported rewards are per token too.
      reward_scale: the hyper-parameter that scales the reported implicit rewards
        ``scale * (log pi - log ref)`` (TRL's ``beta``), or None for unscaled rewards.
    """

    fn: Callable[..., jax.Array]
    hyperparameters: Mapping[str, Any]
    uses_reference: bool = True
    length_normalized: bool = False
    reward_scale: str | None = "beta"

    def __post_init__(self):
        object.__setattr__(self, "hyperparameters", dict(self.hyperparameters))
        if self.reward_scale is not None and self.reward_scale not in self.hyperparameters:
            raise ValueError(
                f"reward_scale={self.reward_scale!r} is not one of the loss's hyperparameters "
                f"{sorted(self.hyperparameters)}; declare it with its default, or pass None"
            )

    def resolve(self, values: Mapping[str, Any], *, name: str = "") -> dict[str, Any]:
        """The hyper-parameters ``fn`` is called with: its defaults, overridden by the set
        (non-None) ``values``. A set value it does not take is an error (a 0 label smoothing
        means "off" and is accepted by every loss)."""
        out = dict(self.hyperparameters)
        for key, value in values.items():
            if value is None:
                continue
            if key in out:
                out[key] = value
            elif not (key == "label_smoothing" and _is_zero(value)):
                raise ValueError(
                    f"{key}={value!r} is not used by preference loss {name or self.fn.__name__!r}"
                    f" (it takes {sorted(out)}); leave it unset or choose a loss that uses it"
                )
        return out

    def scale(self, hyperparameters: Mapping[str, Any]) -> Any:
        """The reward scale among resolved ``hyperparameters`` (1 when declared unscaled)."""
        return 1.0 if self.reward_scale is None else hyperparameters[self.reward_scale]


PREFERENCE_LOSSES: dict[str, PreferenceLoss] = {
    "sigmoid": PreferenceLoss(
        fn=losses.dpo_loss, hyperparameters={"beta": 0.1, "label_smoothing": 0.0}
    ),
    "ipo": PreferenceLoss(
        fn=losses.ipo_loss, hyperparameters={"beta": 0.1}, length_normalized=True
    ),
    "hinge": PreferenceLoss(fn=losses.hinge_loss, hyperparameters={"beta": 0.1}),
    "robust": PreferenceLoss(
        fn=losses.robust_dpo_loss, hyperparameters={"beta": 0.1, "label_smoothing": 0.0}
    ),
    "simpo": PreferenceLoss(
        fn=losses.simpo_loss,
        hyperparameters={"beta": 2.0, "gamma": 1.0, "label_smoothing": 0.0},
        uses_reference=False,
        length_normalized=True,
    ),
}


def register(
    name: str,
    fn: Callable[..., jax.Array],
    *,
    hyperparameters: Mapping[str, Any],
    uses_reference: bool = True,
    length_normalized: bool = False,
    reward_scale: str | None = "beta",
) -> PreferenceLoss:
    """Registers ``fn`` under ``name`` (replacing any loss of that name) and returns the entry.

    The arguments are ``PreferenceLoss``'s. A step built afterwards uses the new entry: steps
    hold the entry itself, never the name.
    """
    entry = PreferenceLoss(
        fn=fn,
        hyperparameters=hyperparameters,
        uses_reference=uses_reference,
        length_normalized=length_normalized,
        reward_scale=reward_scale,
    )
    PREFERENCE_LOSSES[name] = entry
    return entry


def get_preference_loss(loss: str | PreferenceLoss) -> PreferenceLoss:
    """The entry registered under ``loss`` (a config value), or ``loss`` itself if an entry."""
    if isinstance(loss, PreferenceLoss):
        return loss
    try:
        return PREFERENCE_LOSSES[loss]
    except KeyError:
        valid = ", ".join(sorted(PREFERENCE_LOSSES))
        raise ValueError(
            f"unknown preference loss {loss!r}; choose one of: {valid} "
            "(or register a new one with spar_jax.training.preference.register)"
        ) from None


def _is_zero(value: Any) -> bool:
    return isinstance(value, int | float) and value == 0


def weighted_mean(weighted: jax.Array, mask: jax.Array | None) -> jax.Array:
    """``sum(weighted) / sum(mask)`` for values the weights were already applied to; 0 when
    the weights sum to 0 (``masked_mean`` for values not yet weighted)."""
    if mask is None:
        return jnp.mean(jnp.asarray(weighted, jnp.float32))
    total = jnp.sum(jnp.asarray(weighted, jnp.float32))
    weight = jnp.sum(jnp.asarray(mask, jnp.float32))
    return jnp.where(weight > 0, total / jnp.where(weight > 0, weight, 1.0), 0.0)


def preference_metrics(
    policy_chosen_logps: jax.Array,
    policy_rejected_logps: jax.Array,
    reference_chosen_logps: jax.Array | None = None,
    reference_rejected_logps: jax.Array | None = None,
    *,
    beta: Any,
    mask: jax.Array | None = None,
) -> dict[str, jax.Array]:
    """Batch means of the implicit rewards ``r = beta * (log pi - log ref)``, as TRL logs them.

    Args:
      policy_chosen_logps, policy_rejected_logps: ``[B]``.
      reference_chosen_logps, reference_rejected_logps: ``[B]``, or ``None`` for a
        reference-free loss (reward ``beta * log pi``).
      beta: reward scale.
      mask: optional ``[B]`` per-example weights for the means.

    Returns:
      Scalars ``rewards/chosen``, ``rewards/rejected``, ``rewards/margins`` (chosen - rejected)
      and ``rewards/accuracies`` (fraction with chosen > rejected, strictly).
    """
    chosen = jnp.asarray(policy_chosen_logps, jnp.float32)
    rejected = jnp.asarray(policy_rejected_logps, jnp.float32)
    if reference_chosen_logps is not None:
        chosen = chosen - jnp.asarray(reference_chosen_logps, jnp.float32)
    if reference_rejected_logps is not None:
        rejected = rejected - jnp.asarray(reference_rejected_logps, jnp.float32)
    chosen_rewards, rejected_rewards = beta * chosen, beta * rejected
    return {
        "rewards/chosen": masked_mean(chosen_rewards, mask),
        "rewards/rejected": masked_mean(rejected_rewards, mask),
        "rewards/margins": masked_mean(chosen_rewards - rejected_rewards, mask),
        "rewards/accuracies": masked_mean(
            jnp.asarray(chosen_rewards > rejected_rewards, jnp.float32), mask
        ),
    }


def preference_loss(
    loss: str | PreferenceLoss,
    *,
    policy_chosen_logps: jax.Array,
    policy_rejected_logps: jax.Array,
    reference_chosen_logps: jax.Array | None = None,
    reference_rejected_logps: jax.Array | None = None,
    chosen_lengths: jax.Array | None = None,
    rejected_lengths: jax.Array | None = None,
    beta: float | None = None,
    label_smoothing: float | None = None,
    gamma: float | None = None,
    ftx_weight: float = 0.0,
    mask: jax.Array | None = None,
    loss_kwargs: Mapping[str, Any] | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The registered ``loss`` plus ``ftx_weight x nll_loss``, per example, with metrics.

    Args:
      loss: a name in ``PREFERENCE_LOSSES`` or a ``PreferenceLoss``.
      policy_chosen_logps, policy_rejected_logps: ``[B]`` summed response log-probs.
      reference_chosen_logps, reference_rejected_logps: ``[B]``; required by losses that use
        a reference, ignored by reference-free ones.
      chosen_lengths, rejected_lengths: ``[B]`` response token counts; needed by
        length-normalised losses and by ``ftx_weight != 0``.
      beta, label_smoothing, gamma: hyper-parameters; None keeps the loss's default.
      ftx_weight: weight of the length-normalised chosen NLL (SPaR: 0.1).
      mask: optional ``[B]`` per-example weights (e.g. 0 for padding examples), applied to
        the per-example result once.
      loss_kwargs: more hyper-parameters, for a loss that declares them.

    Returns:
      ``(per_example_loss [B], metrics)``: the per-example loss with the weights applied, and
      scalars ``loss``, ``loss/preference``, ``loss/nll`` (when lengths are given), their
      weighted means; ``logps/chosen``, ``logps/rejected``; and the ``preference_metrics`` of
      the rewards as the loss sees them (per token when it is length-normalised, without a
      reference when it is reference-free, scaled by its declared ``reward_scale``).
    """
    entry = get_preference_loss(loss)
    name = loss if isinstance(loss, str) else ""
    hparams = entry.resolve(
        {"beta": beta, "label_smoothing": label_smoothing, "gamma": gamma, **(loss_kwargs or {})},
        name=name,
    )
    args = [policy_chosen_logps, policy_rejected_logps]
    kwargs: dict[str, Any] = {}
    needed = {}
    if entry.uses_reference:
        needed["reference_chosen_logps"] = reference_chosen_logps
        needed["reference_rejected_logps"] = reference_rejected_logps
        args += [reference_chosen_logps, reference_rejected_logps]
    if entry.length_normalized:
        needed["chosen_lengths"] = chosen_lengths
        needed["rejected_lengths"] = rejected_lengths
        kwargs.update(chosen_lengths=chosen_lengths, rejected_lengths=rejected_lengths)
    missing = [k for k, v in needed.items() if v is None]
    if missing:
        raise ValueError(
            f"preference loss {name or entry.fn.__name__!r} needs {missing}; pass them"
        )

    preference = apply_mask(entry.fn(*args, **kwargs, **hparams), mask)
    total = preference
    metrics: dict[str, jax.Array] = {"loss/preference": weighted_mean(preference, mask)}
    if chosen_lengths is not None:
        nll = losses.nll_loss(policy_chosen_logps, chosen_lengths, mask=mask)
        metrics["loss/nll"] = weighted_mean(nll, mask)
        if not _is_zero(ftx_weight):
            total = total + ftx_weight * nll
    elif not _is_zero(ftx_weight):
        raise ValueError("ftx_weight != 0 needs chosen_lengths (the NLL is length-normalised)")
    metrics["loss"] = weighted_mean(total, mask)
    metrics["logps/chosen"] = masked_mean(policy_chosen_logps, mask)
    metrics["logps/rejected"] = masked_mean(policy_rejected_logps, mask)

    def as_seen(logps, lengths):
        return per_token(logps, lengths) if entry.length_normalized else logps

    ref_chosen = ref_rejected = None
    if entry.uses_reference:
        ref_chosen = as_seen(reference_chosen_logps, chosen_lengths)
        ref_rejected = as_seen(reference_rejected_logps, rejected_lengths)
    metrics.update(
        preference_metrics(
            as_seen(policy_chosen_logps, chosen_lengths),
            as_seen(policy_rejected_logps, rejected_lengths),
            ref_chosen,
            ref_rejected,
            beta=entry.scale(hparams),
            mask=mask,
        )
    )
    return total, metrics
