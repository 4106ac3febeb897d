"""Pure train steps for DPO and SFT, built by factories, jitted in one place (``compile_step``).

``make_dpo_step(...)`` and ``make_sft_step(...)`` return ``train_step(state, batch) -> (state,
metrics)``: one pure function, un-jitted, so that the sharding layer can wrap it with its own
in/out shardings through ``compile_step``. Batches follow the contract of ``training.data``
(numpy, right-padded; see the module docstring there):

* SFT: ``tokens``, ``mask``, ``loss_mask`` ``[B, T]``, ``weight`` ``[B]``, ``index`` ``[B]``.
* DPO: ``chosen_*`` / ``rejected_*`` ``tokens``, ``mask``, ``loss_mask`` ``[B, T]``, ``weight``,
  ``index``; plus ``reference_chosen_logps`` / ``reference_rejected_logps`` ``[B]`` when the
  reference log-probs were precomputed (``reference="precompute"``).

``loss_mask[:, t]`` marks ``tokens[:, t]`` as a target predicted from the output at ``t - 1``.

Gradient accumulation is a ``lax.scan`` over ``accum_steps`` micro-batches inside the step
(chosen over ``optax.MultiSteps``): one call is one optimizer update, so the step counter,
schedule, checkpoints and metrics all count updates, and each micro-batch's objective is
divided by the *full* batch's example weight (DPO) or target-token count (SFT), which makes k
micro-batches equal one big batch up to float rounding.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from spar_jax import models
from spar_jax.training import logprobs, preference
from spar_jax.training.state import TrainState

Batch = Mapping[str, jax.Array]
Metrics = dict[str, jax.Array]
StepFn = Callable[[TrainState, Batch], tuple[TrainState, Metrics]]

REFERENCE_MODES = ("precompute", "online")
_REF_KEYS = ("reference_chosen_logps", "reference_rejected_logps")


# ---------------------------------------------------------------------------------------------
# Log-probabilities of the response tokens
# ---------------------------------------------------------------------------------------------


def shift_targets(tokens: jax.Array, loss_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(targets, target_mask)``, both ``[B, T]``: the output at ``t`` predicts ``tokens[t+1]``.

    Shifting by a roll keeps the length ``T`` (the last position predicts nothing), so shapes
    stay multiples of whatever the data pipeline padded to.
    """
    targets = jnp.roll(tokens, -1, axis=1)
    target_mask = jnp.roll(loss_mask, -1, axis=1).at[:, -1].set(False)
    return targets, target_mask


def target_logps(
    cfg: models.ModelConfig,
    params: Any,
    tokens: jax.Array,
    mask: jax.Array,
    targets: jax.Array,
    target_mask: jax.Array,
    *,
    chunk_size: int = 4096,
) -> jax.Array:
    """``sum_t target_mask[t] * log p(targets[t] | tokens[:t+1])`` per row, ``[B]`` float32.

    The final hidden states go through the fused LM head + log-softmax
    ``logprobs.sequence_logps_from_hidden``: with ``V > chunk_size`` the ``[B, T, V]`` logits are
    never built.

    Args:
      cfg: model config (its ``dtype`` is the compute dtype; params stay as they are).
      params: parameter pytree.
      tokens, mask: ``[B, T]`` inputs and their real-token mask, right-padded.
      targets, target_mask: ``[B, T]`` from ``shift_targets``.
      chunk_size: vocabulary columns per chunk of the log-softmax.
    """
    # The batch contract is right padding: declared, so that attention="auto" may fuse.
    hidden, _ = models.apply(
        cfg, params, tokens, mask=mask, return_hidden=True, padding="right"
    )  # [B, T, D]
    head = models.lm_head(cfg, params).astype(hidden.dtype)  # [D, V]
    return logprobs.sequence_logps_from_hidden(
        hidden, head, targets, target_mask, chunk_size=chunk_size
    )


def response_logps(
    cfg: models.ModelConfig,
    params: Any,
    tokens: jax.Array,
    mask: jax.Array,
    loss_mask: jax.Array,
    *,
    chunk_size: int = 4096,
) -> tuple[jax.Array, jax.Array]:
    """Summed log-probs of the ``loss_mask`` tokens and their counts, ``([B], [B])`` float32."""
    targets, target_mask = shift_targets(tokens, loss_mask)
    logps = target_logps(cfg, params, tokens, mask, targets, target_mask, chunk_size=chunk_size)
    return logps, logprobs.token_counts(target_mask)


def _pad_to(x: jax.Array, length: int) -> jax.Array:
    return jnp.pad(x, ((0, 0), (0, length - x.shape[1])))


def pair_logps(
    cfg: models.ModelConfig, params: Any, batch: Batch, *, chunk_size: int = 4096
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """``(chosen_logps, rejected_logps, chosen_lengths, rejected_lengths)``, each ``[B]``.

    Chosen and rejected go through the model as ONE ``[2B, T]`` batch (one forward, one
    backward, better matmul shapes than two half batches).
    """
    length = max(batch["chosen_tokens"].shape[1], batch["rejected_tokens"].shape[1])

    def both(key: str) -> jax.Array:
        parts = [
            _pad_to(jnp.asarray(batch[f"{side}_{key}"]), length) for side in ("chosen", "rejected")
        ]
        return jnp.concatenate(parts, axis=0)  # [2B, T]

    logps, lengths = response_logps(
        cfg, params, both("tokens"), both("mask"), both("loss_mask"), chunk_size=chunk_size
    )
    b = batch["chosen_tokens"].shape[0]
    return logps[:b], logps[b:], lengths[:b], lengths[b:]


def make_reference_fn(
    cfg: models.ModelConfig, *, chunk_size: int = 4096
) -> Callable[[Any, Batch], tuple[jax.Array, jax.Array]]:
    """``fn(params, dpo_batch) -> (chosen_logps [B], rejected_logps [B])`` (un-jitted).

    The same computation the online reference runs inside the step, for precomputing.
    """

    def reference(params: Any, batch: Batch) -> tuple[jax.Array, jax.Array]:
        chosen, rejected, _, _ = pair_logps(cfg, params, batch, chunk_size=chunk_size)
        return chosen, rejected

    return reference


# ---------------------------------------------------------------------------------------------
# The generic step: accumulate gradients over micro-batches, then one optimizer update
# ---------------------------------------------------------------------------------------------

# ``micro(params, ref_params, micro_batch, denominator) -> (objective, weighted metrics)``: the
# objective's gradients and the metrics are summed over micro-batches.
MicroFn = Callable[[Any, Any, Batch, jax.Array], tuple[jax.Array, Metrics]]


def _split_micro(batch: Batch, accum_steps: int) -> Batch:
    """``[B, ...] -> [accum_steps, B / accum_steps, ...]`` for every array of the batch.

    Micro-batch ``i`` takes rows ``i, i + k, i + 2k, ...`` (strided, not contiguous), so when
    the batch axis is sharded over devices every device contributes rows to every micro-batch
    and none sits idle.
    """

    def split(x):
        x = jnp.asarray(x)
        if x.shape[0] % accum_steps:
            raise ValueError(
                f"batch of {x.shape[0]} rows does not split into accum_steps={accum_steps} "
                "micro-batches; make the batch size a multiple of it"
            )
        return jnp.swapaxes(x.reshape(x.shape[0] // accum_steps, accum_steps, *x.shape[1:]), 0, 1)

    return {k: split(v) for k, v in batch.items()}


def make_step(
    micro: MicroFn,
    denominator: Callable[[Batch], jax.Array],
    tx: optax.GradientTransformation,
    *,
    schedule: Callable[[jax.Array], jax.Array] | None = None,
    accum_steps: int = 1,
) -> StepFn:
    """A ``train_step(state, batch) -> (state, metrics)`` from a micro-batch objective.

    ``denominator(batch)`` is computed once on the full batch (total example weight, or total
    target tokens) and passed to every micro-batch so their objectives add up to the full-batch
    mean. Metrics: the summed micro metrics plus ``grad_norm`` (before clipping) and ``lr``.
    """
    if accum_steps < 1:
        raise ValueError(f"accum_steps={accum_steps} must be >= 1")
    grad_fn = jax.value_and_grad(micro, has_aux=True)

    def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
        batch = {k: jnp.asarray(v) for k, v in batch.items() if k != "index"}
        denom = denominator(batch)
        if accum_steps == 1:
            (_, metrics), grads = grad_fn(state.params, state.ref_params, batch, denom)
        else:
            micro_batches = _split_micro(batch, accum_steps)
            zeros = jax.tree.map(jnp.zeros_like, state.params)
            first = jax.tree.map(lambda x: x[0], micro_batches)
            metric_shapes = jax.eval_shape(
                lambda p, b: micro(p, state.ref_params, b, denom)[1], state.params, first
            )
            init = (zeros, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), metric_shapes))

            def body(carry, mb):
                grad_sum, metric_sum = carry
                (_, m), g = grad_fn(state.params, state.ref_params, mb, denom)
                return (
                    jax.tree.map(jnp.add, grad_sum, g),
                    jax.tree.map(jnp.add, metric_sum, m),
                ), None

            (grads, metrics), _ = jax.lax.scan(body, init, micro_batches)

        grad_norm = optax.global_norm(grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = dict(metrics, grad_norm=grad_norm)
        if schedule is not None:
            metrics["lr"] = jnp.asarray(schedule(state.step), jnp.float32)
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
        return new_state, metrics

    return train_step


# ---------------------------------------------------------------------------------------------
# DPO and SFT
# ---------------------------------------------------------------------------------------------


def make_dpo_step(
    cfg: models.ModelConfig,
    tx: optax.GradientTransformation,
    *,
    loss: str | preference.PreferenceLoss = "sigmoid",
    beta: float | None = 0.1,
    label_smoothing: float | None = None,
    gamma: float | None = None,
    ftx_weight: float = 0.0,
    loss_kwargs: Mapping[str, Any] | None = None,
    reference: str = "precompute",
    schedule: Callable[[jax.Array], jax.Array] | None = None,
    accum_steps: int = 1,
    chunk_size: int = 4096,
) -> StepFn:
    """DPO-family train step (``preference.preference_loss``) with optional ``ftx`` NLL term.

    Args:
      cfg: model config; ``cfg.replace(dtype="bfloat16")`` computes in bfloat16 while the
        params (and optimizer) stay float32 master weights.
      tx: optimizer (``optim.make_optimizer``).
      loss, beta, label_smoothing, gamma, ftx_weight, loss_kwargs: as ``preference_loss``.
      reference: "precompute" reads ``reference_*_logps`` from the batch; "online" runs
        ``state.ref_params`` (no gradient) on the same ``[2B, T]`` batch.
      schedule: the optimizer's schedule, only to report ``lr``.
      accum_steps: micro-batches per update (the batch must split evenly).
      chunk_size: vocabulary chunk of the log-softmax.

    Returns:
      ``train_step(state, batch) -> (state, metrics)``, un-jitted (see ``compile_step``).
      Metrics: ``loss``, ``loss/preference``, ``loss/nll``, ``logps/*``, ``rewards/*``,
      ``grad_norm``, ``lr``.
    """
    if reference not in REFERENCE_MODES:
        raise ValueError(f"reference={reference!r}; use one of {REFERENCE_MODES}")
    loss = preference.get_preference_loss(loss)  # the entry itself: re-registering makes a new step

    def micro(params, ref_params, batch, total_weight):
        pc, pr, nc, nr = pair_logps(cfg, params, batch, chunk_size=chunk_size)
        if reference == "online":
            rc, rr, _, _ = pair_logps(cfg, ref_params, batch, chunk_size=chunk_size)
            rc, rr = jax.lax.stop_gradient(rc), jax.lax.stop_gradient(rr)
        else:
            missing = [k for k in _REF_KEYS if k not in batch]
            if missing:
                raise ValueError(f"reference='precompute' but the batch has no {missing}")
            rc, rr = batch["reference_chosen_logps"], batch["reference_rejected_logps"]
        weight = batch["weight"].astype(jnp.float32)
        per_example, metrics = preference.preference_loss(
            loss,
            policy_chosen_logps=pc,
            policy_rejected_logps=pr,
            reference_chosen_logps=rc,
            reference_rejected_logps=rr,
            chosen_lengths=nc,
            rejected_lengths=nr,
            beta=beta,
            label_smoothing=label_smoothing,
            gamma=gamma,
            ftx_weight=ftx_weight,
            mask=weight,
            loss_kwargs=loss_kwargs,
        )
        # per_example is already weighted (zero on padding rows), so this is the full-batch mean.
        objective = jnp.sum(per_example) / total_weight
        share = jnp.sum(weight) / total_weight  # metrics are micro means: reweight to add up
        return objective, {k: v * share for k, v in metrics.items()}

    def denominator(batch):
        return jnp.maximum(jnp.sum(batch["weight"].astype(jnp.float32)), 1e-9)

    return make_step(micro, denominator, tx, schedule=schedule, accum_steps=accum_steps)


def make_sft_step(
    cfg: models.ModelConfig,
    tx: optax.GradientTransformation,
    *,
    schedule: Callable[[jax.Array], jax.Array] | None = None,
    accum_steps: int = 1,
    chunk_size: int = 4096,
) -> StepFn:
    """SFT train step: mean NLL over every target token of the batch (``loss_mask`` only).

    ``loss = -sum_{b,t} weight[b] * loss_mask * log p / sum_{b,t} weight[b] * loss_mask``: a
    token mean over the whole (accumulated) batch, as the HF Trainer computes it, so long
    responses weigh more than short ones. Prompt tokens are never targets.

    Returns:
      ``train_step(state, batch) -> (state, metrics)`` with ``loss``, ``tokens`` (target
      tokens in the batch), ``grad_norm``, ``lr``.
    """

    def micro(params, ref_params, batch, total_tokens):
        del ref_params
        logps, lengths = response_logps(
            cfg, params, batch["tokens"], batch["mask"], batch["loss_mask"], chunk_size=chunk_size
        )
        weight = batch["weight"].astype(jnp.float32)
        nll = -jnp.sum(jnp.where(weight != 0, weight * logps, 0.0)) / total_tokens
        return nll, {"loss": nll, "tokens": jnp.sum(weight * lengths)}

    def denominator(batch):
        _, target_mask = shift_targets(batch["tokens"], batch["loss_mask"])
        counts = logprobs.token_counts(target_mask)
        return jnp.maximum(jnp.sum(batch["weight"].astype(jnp.float32) * counts), 1e-9)

    return make_step(micro, denominator, tx, schedule=schedule, accum_steps=accum_steps)


def compile_step(
    fn: StepFn,
    state_sharding: Any = None,
    batch_sharding: Any = None,
    *,
    compiler_options: Mapping[str, Any] | None = None,
) -> Callable[[TrainState, Batch], tuple[TrainState, Metrics]]:
    """``jax.jit`` of a train step with the state's buffers donated (updated in place).

    Args:
      fn: from ``make_dpo_step`` / ``make_sft_step``.
      state_sharding: optional sharding pytree (or prefix) for the state, used for the input
        and the output state; ``None`` lets jit infer it from the arguments.
      batch_sharding: optional sharding (prefix) for the batch.
      compiler_options: XLA options for this function only.

    The caller must not use a state after passing it in (its buffers are donated).
    """
    kwargs: dict[str, Any] = {"compiler_options": dict(compiler_options or {}) or None}
    if state_sharding is not None or batch_sharding is not None:
        # ``None`` leaves mean "unspecified" to jax.jit.
        kwargs["in_shardings"] = (state_sharding, batch_sharding)
        kwargs["out_shardings"] = (state_sharding, None)
    return jax.jit(fn, donate_argnums=(0,), **kwargs)
