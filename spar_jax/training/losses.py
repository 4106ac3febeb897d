"""The DPO family of preference losses, per example, as pure functions over arrays.

Computation is float32 whatever the input dtype, and every loss returns per-example values
``[B]``; reduce them in the train step (``masked_mean``). Log-probs of a response are sums over
its tokens (``training.logprobs``); losses that length-normalise also take the token counts.
Each loss takes an optional per-example ``mask`` (weights, 0 on padding) and applies it with
``apply_mask``, so that it can be used on its own; the trainer calls them through
``training.preference``, which applies the mask itself, once.

SPaR trains the actor with sigmoid DPO (``dpo_loss``, beta 0.1) against the previous round's
actor plus 0.1 x the length-normalised NLL of the chosen response (``nll_loss``, LLaMA-Factory's
``pref_ftx``). How to add a loss: ``training.preference`` (and the README).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

__all__ = [
    "apply_mask",
    "dpo_loss",
    "hinge_loss",
    "ipo_loss",
    "masked_mean",
    "nll_loss",
    "per_token",
    "robust_dpo_loss",
    "simpo_loss",
]


def _f32(x: Any) -> jax.Array:
    return jnp.asarray(x, jnp.float32)


# ---------------------------------------------------------------------------------------------
# Reductions and masks
# ---------------------------------------------------------------------------------------------


def apply_mask(values: jax.Array, mask: jax.Array | None) -> jax.Array:
    """``values * mask`` with exact zeros where ``mask == 0`` (even if ``values`` is nan/inf).

    Args:
      values: ``[B]`` (or any shape) per-example values.
      mask: same shape, bool or float weights; ``None`` returns ``values`` unchanged.
    """
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
    total = jnp.sum(apply_mask(x, mask))
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


def per_token(logps: jax.Array, lengths: jax.Array | None) -> jax.Array:
    """``logps / max(lengths, 1)`` in float32, ``[B]``: the mean token log-prob of each response
    (``logps`` unchanged when ``lengths`` is None)."""
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
    return apply_mask(_smoothed_logistic(beta * h, label_smoothing), mask)


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
    what TRL (1.x) and LLaMA-Factory do and what the IPO authors used; the trainer always passes
    the lengths.

    Args:
      policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
        reference_rejected_logps: ``[B]`` summed response log-probs.
      beta: regularisation ``tau``; the target margin is ``1 / (2 tau)``.
      chosen_lengths, rejected_lengths: optional ``[B]`` token counts (clamped to >= 1).
      mask: optional ``[B]`` per-example weights.

    Returns:
      ``[B]`` float32 losses.
    """
    h = per_token(
        _f32(policy_chosen_logps) - _f32(reference_chosen_logps), chosen_lengths
    ) - per_token(_f32(policy_rejected_logps) - _f32(reference_rejected_logps), rejected_lengths)
    return apply_mask((h - 1.0 / (2.0 * beta)) ** 2, mask)


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
    return apply_mask(jax.nn.relu(1.0 - beta * h), mask)


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
    return apply_mask((clean - flipped) / (1.0 - 2.0 * label_smoothing), mask)


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
    log-probs together with ``chosen_lengths`` / ``rejected_lengths`` (the trainer does the
    latter). The paper's defaults are around ``beta = 2``, ``gamma / beta = 0.5``.

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
    chosen = per_token(policy_chosen_logps, chosen_lengths)
    rejected = per_token(policy_rejected_logps, rejected_lengths)
    return apply_mask(_smoothed_logistic(beta * (chosen - rejected) - gamma, label_smoothing), mask)


def nll_loss(
    chosen_logps_sum: jax.Array, chosen_lengths: jax.Array, *, mask: jax.Array | None = None
) -> jax.Array:
    """Length-normalised NLL of the chosen response, ``-log pi(y_c) / |y_c|``, ``[B]``.

    SPaR adds ``0.1 x`` this to DPO, as LLaMA-Factory's ``pref_ftx`` does
    (``losses += ftx_gamma * -chosen_logps / chosen_length``); the weight is applied by the
    caller (``preference.preference_loss(..., ftx_weight=0.1)``). Lengths are clamped to >= 1.
    """
    return apply_mask(-per_token(chosen_logps_sum, chosen_lengths), mask)
