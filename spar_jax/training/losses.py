"""Sequence log-probabilities and the DPO family of preference losses.

Everything here is a pure function over arrays. Computation is float32 whatever the input dtype,
and every loss returns per-example values ``[B]``: reduce them in the train step with
``masked_mean``. The log-prob of a response is the sum over its tokens (``sequence_logps``);
losses that length-normalise also take the token counts.

SPaR trains the actor with sigmoid DPO against the previous round's actor (beta 0.1) plus
0.1 x the length-normalised NLL of the chosen response (LLaMA-Factory's ``pref_ftx``)::

    per_example, metrics = preference_loss(
        "sigmoid",
        policy_chosen_logps=pc, policy_rejected_logps=pr,
        reference_chosen_logps=rc, reference_rejected_logps=rr,
        chosen_lengths=nc, rejected_lengths=nr,
        beta=0.1, ftx_weight=0.1, mask=example_mask,
    )
    loss = masked_mean(per_example, example_mask)

How to add a loss
-----------------
1. Write one pure per-example function in this file (or anywhere). Its arguments are named from
   this list, and ``preference_loss`` passes it exactly the ones it declares:

   * log-probs ``[B]``, summed over response tokens: ``policy_chosen_logps``,
     ``policy_rejected_logps``, ``reference_chosen_logps``, ``reference_rejected_logps``
     (leave the reference ones out for a reference-free loss);
   * ``chosen_lengths``, ``rejected_lengths`` ``[B]``: response token counts, for a loss that
     length-normalises (declare them with default ``None``);
   * keyword-only hyperparameters with defaults: ``beta``, ``label_smoothing``, ``gamma``, or
     any other name, which the trainer then passes through ``loss_kwargs``;
   * ``mask=None``: optional per-example weights ``[B]``; apply them with ``_apply_mask``.

   Compute in float32 and return ``[B]``. Give it a docstring with the formula and the paper.
2. Add one line to ``PREFERENCE_LOSSES``: ``"my_loss": my_loss,`` (code outside this package can
   also do ``losses.PREFERENCE_LOSSES["my_loss"] = my_loss``).

Then select it from the config by name; the trainer does not change.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

# The log-prob helpers live in logprobs.py; they are re-exported here, where losses are built.
from spar_jax.training.logprobs import (
    sequence_logps,
    sequence_logps_from_hidden,
    token_counts,
    token_logps,
)

__all__ = [
    "PREFERENCE_LOSSES",
    "dpo_loss",
    "get_preference_loss",
    "hinge_loss",
    "ipo_loss",
    "masked_mean",
    "nll_loss",
    "preference_loss",
    "preference_metrics",
    "robust_dpo_loss",
    "sequence_logps",
    "sequence_logps_from_hidden",
    "simpo_loss",
    "token_counts",
    "token_logps",
]


def _f32(x: Any) -> jax.Array:
    return jnp.asarray(x, jnp.float32)


# ---------------------------------------------------------------------------------------------
# Reductions and masks
# ---------------------------------------------------------------------------------------------


def _apply_mask(values: jax.Array, mask: jax.Array | None) -> jax.Array:
    """``values * mask`` with exact zeros where ``mask == 0`` (even if ``values`` is nan/inf)."""
    if mask is None:
        return values
    mask = _f32(mask)
    return jnp.where(mask != 0, values * mask, 0.0)


def masked_mean(x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Weighted mean ``sum(x * mask) / sum(mask)``; 0 when the mask is all zeros.

    Args:
      x: ``[B]`` (or any shape) per-example values.
      mask: same shape as ``x``, bool or float weights; ``None`` means the plain mean.

    Returns:
      A float32 scalar. Padding examples (weight 0) contribute nothing, even if they are nan.
    """
    x = _f32(x)
    if mask is None:
        return jnp.mean(x)
    total = jnp.sum(_apply_mask(x, mask))
    weight = jnp.sum(_f32(mask))
    return jnp.where(weight > 0, total / jnp.where(weight > 0, weight, 1.0), 0.0)


# ---------------------------------------------------------------------------------------------
# Preference losses (per example)
# ---------------------------------------------------------------------------------------------


def _logratio_margin(
    policy_chosen_logps: jax.Array,
    policy_rejected_logps: jax.Array,
    reference_chosen_logps: jax.Array,
    reference_rejected_logps: jax.Array,
) -> jax.Array:
    """``h = (pi_c - ref_c) - (pi_r - ref_r)`` in float32, ``[B]``."""
    return (_f32(policy_chosen_logps) - _f32(reference_chosen_logps)) - (
        _f32(policy_rejected_logps) - _f32(reference_rejected_logps)
    )


def _smoothed_logistic(logits: jax.Array, label_smoothing: Any) -> jax.Array:
    """``-(1 - eps) log sigmoid(x) - eps log sigmoid(-x)``: BCE against soft label ``1 - eps``."""
    return -(1.0 - label_smoothing) * jax.nn.log_sigmoid(
        logits
    ) - label_smoothing * jax.nn.log_sigmoid(-logits)


def _per_token(logps: jax.Array, lengths: jax.Array | None) -> jax.Array:
    logps = _f32(logps)
    if lengths is None:
        return logps
    # Clamped like TRL (``.clamp(min=1.0)``) so an empty response gives 0, not nan.
    return logps / jnp.maximum(_f32(lengths), 1.0)


def dpo_loss(
    policy_chosen_logps: jax.Array,
    policy_rejected_logps: jax.Array,
    reference_chosen_logps: jax.Array,
    reference_rejected_logps: jax.Array,
    *,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
    mask: jax.Array | None = None,
) -> jax.Array:
    """Sigmoid DPO, with conservative label smoothing (cDPO). TRL ``loss_type="sigmoid"``.

    With ``h = (log pi(y_c) - log ref(y_c)) - (log pi(y_r) - log ref(y_r))``::

        loss = -(1 - eps) * log sigmoid(beta * h) - eps * log sigmoid(-beta * h)

    ``eps = 0`` is DPO (Rafailov et al. 2023, "Direct Preference Optimization", Eq. 7): the loss
    is ``log 2`` when policy == reference. ``eps > 0`` treats each label as flipped with
    probability ``eps`` (cDPO, Mitchell 2023, "A note on DPO with noisy preferences"); at
    ``eps = 0.5`` the loss is symmetric in ``h`` and minimal (``log 2``) at ``h = 0``, i.e. it
    stops pushing the margin. (TRL 1.16's ``"sigmoid"`` drops the ``eps`` term; its CPO
    ``"sigmoid"`` and DPO ``"aot"`` losses keep this form.)

    Args:
      policy_chosen_logps, policy_rejected_logps: ``[B]`` summed response log-probs.
      reference_chosen_logps, reference_rejected_logps: ``[B]`` the same under the reference.
      beta: inverse temperature (KL strength).
      label_smoothing: ``eps`` in ``[0, 0.5]``.
      mask: optional ``[B]`` per-example weights.

    Returns:
      ``[B]`` float32 losses.
    """
    h = _logratio_margin(
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps
    )
    return _apply_mask(_smoothed_logistic(beta * h, label_smoothing), mask)


def ipo_loss(
    policy_chosen_logps: jax.Array,
    policy_rejected_logps: jax.Array,
    reference_chosen_logps: jax.Array,
    reference_rejected_logps: jax.Array,
    *,
    beta: float = 0.1,
    chosen_lengths: jax.Array | None = None,
    rejected_lengths: jax.Array | None = None,
    mask: jax.Array | None = None,
) -> jax.Array:
    """IPO (Azar et al. 2023, "A General Theoretical Paradigm to Understand Learning from Human
    Preferences", Eq. 17; ``beta`` is their tau). TRL ``loss_type="ipo"``::

        loss = (h - 1 / (2 * beta)) ** 2

    where ``h`` is the DPO log-ratio margin. When lengths are given, each side's log-ratio is
    divided by its token count first, ``h = (pi_c - ref_c) / n_c - (pi_r - ref_r) / n_r``, which is
    what TRL (1.x) and LLaMA-Factory do and what the IPO authors used; ``preference_loss`` always
    passes the lengths.

    Args:
      policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
        reference_rejected_logps: ``[B]`` summed response log-probs.
      beta: regularisation ``tau``; the target margin is ``1 / (2 tau)``.
      chosen_lengths, rejected_lengths: optional ``[B]`` token counts (clamped to >= 1).
      mask: optional ``[B]`` per-example weights.

    Returns:
      ``[B]`` float32 losses.
    """
    h = _per_token(
        _f32(policy_chosen_logps) - _f32(reference_chosen_logps), chosen_lengths
    ) - _per_token(_f32(policy_rejected_logps) - _f32(reference_rejected_logps), rejected_lengths)
    return _apply_mask((h - 1.0 / (2.0 * beta)) ** 2, mask)


def hinge_loss(
    policy_chosen_logps: jax.Array,
    policy_rejected_logps: jax.Array,
    reference_chosen_logps: jax.Array,
    reference_rejected_logps: jax.Array,
    *,
    beta: float = 0.1,
    mask: jax.Array | None = None,
) -> jax.Array:
    """Hinge loss on the DPO margin, after SLiC (Zhao et al. 2023, "SLiC-HF: Sequence Likelihood
    Calibration with Human Feedback"). TRL ``loss_type="hinge"``::

        loss = max(0, 1 - beta * h)

    ``1 / beta`` plays the role of SLiC's margin ``delta``; ``h`` is the DPO log-ratio margin
    (SLiC's own hinge has no reference term; TRL's, like this one, does).

    Args:
      policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
        reference_rejected_logps: ``[B]`` summed response log-probs.
      beta: inverse margin.
      mask: optional ``[B]`` per-example weights.

    Returns:
      ``[B]`` float32 losses.
    """
    h = _logratio_margin(
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps
    )
    return _apply_mask(jax.nn.relu(1.0 - beta * h), mask)


def robust_dpo_loss(
    policy_chosen_logps: jax.Array,
    policy_rejected_logps: jax.Array,
    reference_chosen_logps: jax.Array,
    reference_rejected_logps: jax.Array,
    *,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
    mask: jax.Array | None = None,
) -> jax.Array:
    """Robust DPO (Chowdhury et al. 2024, "Provably Robust DPO: Aligning Language Models with
    Noisy Feedback"). TRL ``loss_type="robust"``::

        loss = ((1 - eps) * -log sigmoid(beta * h) - eps * -log sigmoid(-beta * h)) / (1 - 2 eps)

    An unbiased estimate of the clean DPO loss when each label is flipped with probability
    ``eps`` (unlike cDPO, the flipped term is subtracted). ``eps = 0`` is plain DPO.

    Args:
      policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
        reference_rejected_logps: ``[B]`` summed response log-probs.
      beta: inverse temperature.
      label_smoothing: flip rate ``eps`` in ``[0, 0.5)``.
      mask: optional ``[B]`` per-example weights.

    Returns:
      ``[B]`` float32 losses.
    """
    if isinstance(label_smoothing, int | float) and not 0.0 <= label_smoothing < 0.5:
        raise ValueError(
            f"robust DPO needs label_smoothing (the label flip rate) in [0, 0.5), got {label_smoothing}"
        )
    h = _logratio_margin(
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps
    )
    clean = -(1.0 - label_smoothing) * jax.nn.log_sigmoid(beta * h)
    flipped = -label_smoothing * jax.nn.log_sigmoid(-beta * h)
    return _apply_mask((clean - flipped) / (1.0 - 2.0 * label_smoothing), mask)


def simpo_loss(
    policy_chosen_logps: jax.Array,
    policy_rejected_logps: jax.Array,
    *,
    beta: float = 2.0,
    gamma: float = 1.0,
    label_smoothing: float = 0.0,
    chosen_lengths: jax.Array | None = None,
    rejected_lengths: jax.Array | None = None,
    mask: jax.Array | None = None,
) -> jax.Array:
    """SimPO, reference-free and length-normalised (Meng et al. 2024, "SimPO: Simple Preference
    Optimization with a Reference-Free Reward"). TRL CPO ``loss_type="simpo"``::

        x = beta * (avg_logp(y_c) - avg_logp(y_r)) - gamma
        loss = -(1 - eps) * log sigmoid(x) - eps * log sigmoid(-x)

    ``avg_logp`` is the mean token log-prob. Pass average log-probs directly, or summed
    log-probs together with ``chosen_lengths`` / ``rejected_lengths`` (``preference_loss`` does
    the latter). The paper's defaults are around ``beta = 2``, ``gamma / beta = 0.5``.

    Args:
      policy_chosen_logps, policy_rejected_logps: ``[B]`` average (or, with lengths, summed)
        response log-probs under the policy.
      beta: reward scale.
      gamma: target reward margin.
      label_smoothing: ``eps`` as in cDPO (TRL's CPO applies it the same way).
      chosen_lengths, rejected_lengths: optional ``[B]`` token counts (clamped to >= 1).
      mask: optional ``[B]`` per-example weights.

    Returns:
      ``[B]`` float32 losses.
    """
    chosen = _per_token(policy_chosen_logps, chosen_lengths)
    rejected = _per_token(policy_rejected_logps, rejected_lengths)
    return _apply_mask(
        _smoothed_logistic(beta * (chosen - rejected) - gamma, label_smoothing), mask
    )


def nll_loss(
    chosen_logps_sum: jax.Array, chosen_lengths: jax.Array, *, mask: jax.Array | None = None
) -> jax.Array:
    """Length-normalised NLL of the chosen response, ``-log pi(y_c) / |y_c|``, ``[B]``.

    SPaR adds ``0.1 x`` this to DPO, as LLaMA-Factory's ``pref_ftx`` does
    (``losses += ftx_gamma * -chosen_logps / chosen_length``); the weight is applied by the
    caller (``preference_loss(..., ftx_weight=0.1)``). Lengths are clamped to >= 1.
    """
    return _apply_mask(-_per_token(chosen_logps_sum, chosen_lengths), mask)


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------


def preference_metrics(
    policy_chosen_logps: jax.Array,
    policy_rejected_logps: jax.Array,
    reference_chosen_logps: jax.Array | None = None,
    reference_rejected_logps: jax.Array | None = None,
    *,
    beta: float = 0.1,
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
    chosen = _f32(policy_chosen_logps)
    rejected = _f32(policy_rejected_logps)
    if reference_chosen_logps is not None:
        chosen = chosen - _f32(reference_chosen_logps)
    if reference_rejected_logps is not None:
        rejected = rejected - _f32(reference_rejected_logps)
    chosen_rewards, rejected_rewards = beta * chosen, beta * rejected
    return {
        "rewards/chosen": masked_mean(chosen_rewards, mask),
        "rewards/rejected": masked_mean(rejected_rewards, mask),
        "rewards/margins": masked_mean(chosen_rewards - rejected_rewards, mask),
        "rewards/accuracies": masked_mean(_f32(chosen_rewards > rejected_rewards), mask),
    }


# ---------------------------------------------------------------------------------------------
# Registry and the combined loss the trainer calls
# ---------------------------------------------------------------------------------------------

PreferenceLoss = Callable[..., jax.Array]

PREFERENCE_LOSSES: dict[str, PreferenceLoss] = {
    "sigmoid": dpo_loss,
    "ipo": ipo_loss,
    "hinge": hinge_loss,
    "robust": robust_dpo_loss,
    "simpo": simpo_loss,
}


def get_preference_loss(name: str) -> PreferenceLoss:
    """The loss registered under ``name`` in ``PREFERENCE_LOSSES`` (a config value)."""
    try:
        return PREFERENCE_LOSSES[name]
    except KeyError:
        valid = ", ".join(sorted(PREFERENCE_LOSSES))
        raise ValueError(
            f"unknown preference loss {name!r}; choose one of: {valid} "
            "(or register a new one in spar_jax.training.losses.PREFERENCE_LOSSES)"
        ) from None


def _is_zero(value: Any) -> bool:
    return isinstance(value, int | float) and value == 0


def preference_loss(
    name: str,
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
    """The registered loss ``name`` plus ``ftx_weight x nll_loss``, per example, with metrics.

    The loss function is called with only the arguments its signature declares (see "How to
    add a loss" at the top of this module). A hyperparameter left ``None`` takes the loss's own
    default. One the loss does not take must be ``None`` (``label_smoothing`` may also be
    ``0``): a set value that would be silently ignored is an error.

    Args:
      name: key of ``PREFERENCE_LOSSES``.
      policy_chosen_logps, policy_rejected_logps: ``[B]`` summed response log-probs.
      reference_chosen_logps, reference_rejected_logps: ``[B]``; required by reference-based
        losses, ignored by reference-free ones.
      chosen_lengths, rejected_lengths: ``[B]`` response token counts; needed by
        length-normalising losses and by ``ftx_weight != 0``.
      beta, label_smoothing, gamma: hyperparameters, passed to the losses that take them.
      ftx_weight: weight of the length-normalised chosen NLL (SPaR: 0.1).
      mask: optional ``[B]`` per-example weights (e.g. 0 for padding examples).
      loss_kwargs: extra keyword hyperparameters for a loss that declares them.

    Returns:
      ``(per_example_loss [B], metrics)``; ``metrics`` holds scalars: ``loss``,
      ``loss/preference``, ``loss/nll`` (when lengths are given), ``logps/chosen``,
      ``logps/rejected`` and the ``preference_metrics`` of the rewards the loss itself uses
      (length-normalised for losses taking lengths, reference-free for those without a
      reference).
    """
    fn = get_preference_loss(name)
    params = inspect.signature(fn).parameters
    arrays = {
        "policy_chosen_logps": policy_chosen_logps,
        "policy_rejected_logps": policy_rejected_logps,
        "reference_chosen_logps": reference_chosen_logps,
        "reference_rejected_logps": reference_rejected_logps,
        "chosen_lengths": chosen_lengths,
        "rejected_lengths": rejected_lengths,
    }
    hparams = {"beta": beta, "label_smoothing": label_smoothing, "gamma": gamma}
    hparams.update(loss_kwargs or {})

    kwargs: dict[str, Any] = {k: v for k, v in arrays.items() if k in params and v is not None}
    for key, value in hparams.items():
        if value is None:
            continue
        if key in params:
            kwargs[key] = value
        elif not (key == "label_smoothing" and _is_zero(value)):
            takes = sorted(k for k in params if k not in arrays and k != "mask")
            raise ValueError(
                f"{key}={value!r} is not used by preference loss {name!r} (it takes {takes}); "
                "leave it unset or choose a loss that uses it"
            )
    if "mask" in params:
        kwargs["mask"] = mask
    missing = [k for k, p in params.items() if p.default is p.empty and k not in kwargs]
    if missing:
        raise ValueError(f"preference loss {name!r} needs {missing}; pass them to preference_loss")

    preference = fn(**kwargs)
    if "mask" not in params:  # a loss without a mask argument still gets padding zeroed
        preference = _apply_mask(preference, mask)
    total = preference
    metrics: dict[str, jax.Array] = {"loss/preference": masked_mean(preference, mask)}
    if chosen_lengths is not None:
        nll = nll_loss(policy_chosen_logps, chosen_lengths, mask=mask)
        metrics["loss/nll"] = masked_mean(nll, mask)
        if not _is_zero(ftx_weight):
            total = total + ftx_weight * nll
    elif not _is_zero(ftx_weight):
        raise ValueError("ftx_weight != 0 needs chosen_lengths (the NLL is length-normalised)")
    metrics["loss"] = masked_mean(total, mask)
    metrics["logps/chosen"] = masked_mean(policy_chosen_logps, mask)
    metrics["logps/rejected"] = masked_mean(policy_rejected_logps, mask)

    # Rewards as the loss sees them: per token if it length-normalises, no reference if it has none.
    def _as_seen(logps, lengths):
        if logps is None:
            return None
        return _per_token(logps, lengths if "chosen_lengths" in params else None)

    if "beta" in kwargs:
        reward_beta = kwargs["beta"]
    elif "beta" in params:
        reward_beta = params["beta"].default
    else:
        reward_beta = 1.0
    metrics.update(
        preference_metrics(
            _as_seen(policy_chosen_logps, chosen_lengths),
            _as_seen(policy_rejected_logps, rejected_lengths),
            _as_seen(
                reference_chosen_logps if "reference_chosen_logps" in params else None,
                chosen_lengths,
            ),
            _as_seen(
                reference_rejected_logps if "reference_rejected_logps" in params else None,
                rejected_lengths,
            ),
            beta=reward_beta,
            mask=mask,
        )
    )
    return total, metrics
