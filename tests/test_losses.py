"""Tests for spar_jax.training.losses / preference / logprobs: numpy by hand, TRL's own loss
code, invariants, the registry and the README's how-to."""

from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spar_jax.training import logprobs, losses, preference

B = 6


def _log_sigmoid(x: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -x)


@pytest.fixture
def logps() -> dict[str, np.ndarray]:
    """Summed log-probs and lengths for a batch of B preference pairs (float64 numpy)."""
    rng = np.random.default_rng(0)
    return {
        "policy_chosen_logps": rng.uniform(-80, -10, B),
        "policy_rejected_logps": rng.uniform(-80, -10, B),
        "reference_chosen_logps": rng.uniform(-80, -10, B),
        "reference_rejected_logps": rng.uniform(-80, -10, B),
        "chosen_lengths": rng.integers(5, 40, B).astype(np.float64),
        "rejected_lengths": rng.integers(5, 40, B).astype(np.float64),
    }


def _four(d: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    return (
        d["policy_chosen_logps"],
        d["policy_rejected_logps"],
        d["reference_chosen_logps"],
        d["reference_rejected_logps"],
    )


def _margin(d: dict[str, np.ndarray]) -> np.ndarray:
    pc, pr, rc, rr = _four(d)
    return (pc - rc) - (pr - rr)


# ---------------------------------------------------------------------------------------------
# (a) numbers by hand in numpy
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_dpo_matches_numpy(logps, eps):
    beta = 0.1
    x = beta * _margin(logps)
    expected = -(1 - eps) * _log_sigmoid(x) - eps * _log_sigmoid(-x)
    got = losses.dpo_loss(*_four(logps), beta=beta, label_smoothing=eps)
    assert got.shape == (B,) and got.dtype == jnp.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_ipo_matches_numpy(logps):
    beta = 0.5
    pc, pr, rc, rr = _four(logps)
    nc, nr = logps["chosen_lengths"], logps["rejected_lengths"]
    np.testing.assert_allclose(
        losses.ipo_loss(pc, pr, rc, rr, beta=beta),
        (_margin(logps) - 1 / (2 * beta)) ** 2,
        rtol=1e-5,
    )
    h = (pc - rc) / nc - (pr - rr) / nr
    got = losses.ipo_loss(pc, pr, rc, rr, beta=beta, chosen_lengths=nc, rejected_lengths=nr)
    np.testing.assert_allclose(got, (h - 1 / (2 * beta)) ** 2, rtol=1e-5)


def test_hinge_matches_numpy(logps):
    beta = 0.1
    expected = np.maximum(0.0, 1 - beta * _margin(logps))
    assert (expected == 0).any() and (expected > 0).any()  # both sides of the hinge are exercised
    np.testing.assert_allclose(losses.hinge_loss(*_four(logps), beta=beta), expected, rtol=1e-5)


def test_robust_matches_numpy(logps):
    beta, eps = 0.1, 0.2
    x = beta * _margin(logps)
    expected = (-(1 - eps) * _log_sigmoid(x) + eps * _log_sigmoid(-x)) / (1 - 2 * eps)
    got = losses.robust_dpo_loss(*_four(logps), beta=beta, label_smoothing=eps)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    with pytest.raises(ValueError, match=r"\[0, 0.5\)"):
        losses.robust_dpo_loss(*_four(logps), label_smoothing=0.5)


def test_simpo_matches_numpy(logps):
    beta, gamma, eps = 2.0, 1.2, 0.1
    pc, pr = logps["policy_chosen_logps"], logps["policy_rejected_logps"]
    nc, nr = logps["chosen_lengths"], logps["rejected_lengths"]
    x = beta * (pc / nc - pr / nr) - gamma
    expected = -(1 - eps) * _log_sigmoid(x) - eps * _log_sigmoid(-x)
    from_avg = losses.simpo_loss(pc / nc, pr / nr, beta=beta, gamma=gamma, label_smoothing=eps)
    from_sum = losses.simpo_loss(
        pc, pr, beta=beta, gamma=gamma, label_smoothing=eps, chosen_lengths=nc, rejected_lengths=nr
    )
    np.testing.assert_allclose(from_avg, expected, rtol=1e-5)
    np.testing.assert_allclose(from_sum, expected, rtol=1e-5)


def test_nll_matches_numpy(logps):
    pc, nc = logps["policy_chosen_logps"], logps["chosen_lengths"]
    np.testing.assert_allclose(losses.nll_loss(pc, nc), -pc / nc, rtol=1e-6)
    # an empty response gives 0, not nan (length clamped to 1 as in TRL)
    assert float(losses.nll_loss(jnp.zeros(1), jnp.zeros(1))[0]) == 0.0


def test_preference_metrics_match_numpy(logps):
    beta = 0.1
    pc, pr, rc, rr = _four(logps)
    cr, rj = beta * (pc - rc), beta * (pr - rr)
    m = preference.preference_metrics(pc, pr, rc, rr, beta=beta)
    np.testing.assert_allclose(m["rewards/chosen"], cr.mean(), rtol=1e-5)
    np.testing.assert_allclose(m["rewards/rejected"], rj.mean(), rtol=1e-5)
    np.testing.assert_allclose(m["rewards/margins"], (cr - rj).mean(), rtol=1e-5)
    np.testing.assert_allclose(m["rewards/accuracies"], (cr > rj).mean(), rtol=1e-6)
    weights = np.array([1, 1, 0, 1, 0, 1], np.float32)
    mw = preference.preference_metrics(pc, pr, rc, rr, beta=beta, mask=weights)
    np.testing.assert_allclose(mw["rewards/chosen"], cr[weights > 0].mean(), rtol=1e-5)


def _np_token_logps(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float64)
    log_softmax = logits - logits.max(-1, keepdims=True)
    log_softmax -= np.log(np.exp(log_softmax).sum(-1, keepdims=True))
    return np.take_along_axis(log_softmax, targets[..., None], -1)[..., 0]


def test_sequence_logps_matches_numpy():
    rng = np.random.default_rng(1)
    b, t, v = 3, 7, 11
    logits = rng.normal(size=(b, t, v)).astype(np.float32) * 3
    targets = rng.integers(0, v, (b, t))
    mask = np.array([[0, 0, 1, 1, 1, 1, 0], [0, 1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0, 0]])
    per_token = _np_token_logps(logits, targets)
    expected_sum = (per_token * mask).sum(-1)
    expected_avg = expected_sum / np.maximum(mask.sum(-1), 1)
    # HF-style ignore index on padding must not matter
    padded_targets = np.where(mask == 1, targets, -100)
    got_sum = logprobs.sequence_logps(logits, padded_targets, mask)
    got_avg = logprobs.sequence_logps(logits, padded_targets, mask, average=True)
    np.testing.assert_allclose(got_sum, expected_sum, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_avg, expected_avg, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        logprobs.token_logps(logits, targets), per_token, rtol=1e-5, atol=1e-5
    )
    np.testing.assert_array_equal(logprobs.token_counts(mask), mask.sum(-1))
    # bf16 logits are upcast: result is float32
    assert logprobs.sequence_logps(logits.astype(jnp.bfloat16), targets, mask).dtype == jnp.float32


def test_masked_mean():
    x = jnp.array([1.0, 2.0, jnp.nan, 4.0])
    np.testing.assert_allclose(losses.masked_mean(x, jnp.array([1, 1, 0, 1])), 7 / 3, rtol=1e-6)
    np.testing.assert_allclose(
        losses.masked_mean(x, jnp.array([0.5, 1, 0, 0])), 2.5 / 1.5, rtol=1e-6
    )
    assert float(losses.masked_mean(x, jnp.zeros(4))) == 0.0
    np.testing.assert_allclose(losses.masked_mean(x, jnp.array([0.25, 0.25, 0, 0])), 1.5)
    np.testing.assert_allclose(losses.masked_mean(jnp.array([1.0, 3.0])), 2.0)


# ---------------------------------------------------------------------------------------------
# (b) parity with TRL 1.16's own loss code
# ---------------------------------------------------------------------------------------------


def _trl_dpo_compute_loss(loss_type: str, batch: dict[str, np.ndarray], beta: float, eps: float):
    """Runs TRL's ``DPOTrainer._compute_loss`` (trl/trainer/dpo_trainer.py, the
    ``for loss_type, loss_weight in zip(self.loss_types, ...)`` block) on fixed log-probs.

    No model is built: ``self`` is a namespace with the attributes the method reads, and the
    "model" returns per-token log-probs whose sums are the given sequence log-probs.
    """
    torch = pytest.importorskip("torch")
    dpo_trainer = pytest.importorskip("trl.trainer.dpo_trainer")

    pc, pr, rc, rr = (torch.tensor(a, dtype=torch.float64) for a in _four(batch))
    lengths = np.concatenate([batch["chosen_lengths"], batch["rejected_lengths"]]).astype(int)
    seq = int(lengths.max()) + 2
    # position 0 is a prompt token; completion tokens follow (TRL's IPO counts completion_mask)
    completion_mask = torch.zeros(2 * B, seq, dtype=torch.long)
    for row, n in enumerate(lengths):
        completion_mask[row, 1 : 1 + n] = 1
    shift_mask = completion_mask[:, 1:].double()
    per_token = (
        shift_mask * (torch.cat([pc, pr]) / torch.tensor(lengths, dtype=torch.float64))[:, None]
    )

    def fake_model(**kwargs):
        zeros = torch.zeros(2 * B, seq - 1, dtype=torch.float64)
        return SimpleNamespace(
            log_probs=per_token, entropy=zeros, mean_logits=zeros, is_top1=zeros.bool()
        )

    fake_self = SimpleNamespace(
        model=SimpleNamespace(training=True),
        accelerator=SimpleNamespace(
            device="cpu", gather=lambda x: x, gather_for_metrics=lambda x: x
        ),
        aux_loss_enabled=False,
        ld_alpha=None,
        precompute_ref_logps=True,
        f_divergence_type="reverse_kl",
        loss_types=[loss_type],
        loss_weights=[1.0],
        beta=beta,
        label_smoothing=eps,
        use_weighting=False,
        _metrics={"train": defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
    )
    inputs = {
        "input_ids": torch.zeros(2 * B, seq, dtype=torch.long),
        "attention_mask": torch.ones(2 * B, seq, dtype=torch.long),
        "completion_mask": completion_mask,
        "ref_chosen_logps": rc,
        "ref_rejected_logps": rr,
    }
    loss = dpo_trainer.DPOTrainer._compute_loss(fake_self, fake_model, inputs, return_outputs=False)
    return float(loss), fake_self._metrics["train"]


@pytest.mark.parametrize(
    ("loss_type", "eps"), [("sigmoid", 0.0), ("hinge", 0.0), ("ipo", 0.0), ("robust", 0.1)]
)
def test_dpo_family_matches_trl_dpo_trainer(logps, loss_type, eps):
    beta = 0.1 if loss_type != "ipo" else 0.5
    trl_loss, trl_metrics = _trl_dpo_compute_loss(loss_type, logps, beta, eps)
    per_example, metrics = preference.preference_loss(
        loss_type, **logps, beta=beta, label_smoothing=eps if loss_type == "robust" else None
    )
    np.testing.assert_allclose(float(per_example.mean()), trl_loss, rtol=1e-5)
    if loss_type != "ipo":  # TRL logs unnormalised rewards for IPO; ours are the ones IPO uses
        for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"):
            np.testing.assert_allclose(float(metrics[key]), trl_metrics[key][0], rtol=1e-5)
    for key in ("logps/chosen", "logps/rejected"):
        np.testing.assert_allclose(float(metrics[key]), trl_metrics[key][0], rtol=1e-5)


def _trl_cpo_loss(loss_type: str, chosen, rejected, *, beta: float, eps: float, gamma: float = 0.5):
    """TRL's ``CPOTrainer.cpo_loss`` (trl/experimental/cpo/cpo_trainer.py) called unbound."""
    torch = pytest.importorskip("torch")
    cpo_trainer = pytest.importorskip("trl.experimental.cpo.cpo_trainer")
    fake_self = SimpleNamespace(
        alpha=0.0,
        beta=beta,
        label_smoothing=eps,
        simpo_gamma=gamma,
        loss_type=loss_type,
        accelerator=SimpleNamespace(device="cpu"),
    )
    out, _, _ = cpo_trainer.CPOTrainer.cpo_loss(
        fake_self,
        torch.tensor(chosen, dtype=torch.float64),
        torch.tensor(rejected, dtype=torch.float64),
    )
    return out.numpy()


def test_simpo_matches_trl_cpo(logps):
    beta, gamma, eps = 2.0, 1.0, 0.1
    pc, pr = logps["policy_chosen_logps"], logps["policy_rejected_logps"]
    nc, nr = logps["chosen_lengths"], logps["rejected_lengths"]
    # TRL's CPO feeds simpo average log-probs (``average_log_prob=loss_type in ["ipo", "simpo"]``)
    expected = _trl_cpo_loss("simpo", pc / nc, pr / nr, beta=beta, eps=eps, gamma=gamma)
    per_example, _ = preference.preference_loss(
        "simpo", **logps, beta=beta, gamma=gamma, label_smoothing=eps
    )
    np.testing.assert_allclose(per_example, expected, rtol=1e-5)


def test_label_smoothed_dpo_matches_trl_conservative_sigmoid(logps):
    # TRL 1.16's DPO "sigmoid" no longer has the eps term; its CPO "sigmoid" still computes
    # -(1-eps) logsigmoid(beta x) - eps logsigmoid(-beta x), here with x = the DPO margin.
    beta, eps = 0.1, 0.2
    pc, pr, rc, rr = _four(logps)
    expected = _trl_cpo_loss("sigmoid", pc - rc, pr - rr, beta=beta, eps=eps)
    got = losses.dpo_loss(pc, pr, rc, rr, beta=beta, label_smoothing=eps)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_sequence_logps_matches_trl_get_batch_logps():
    torch = pytest.importorskip("torch")
    cpo_trainer = pytest.importorskip("trl.experimental.cpo.cpo_trainer")
    rng = np.random.default_rng(2)
    b, t, v = 3, 9, 13
    logits = rng.normal(size=(b, t, v)).astype(np.float32)
    labels = rng.integers(0, v, (b, t))
    labels[:, :3] = -100  # prompt
    labels[1, 7:] = -100  # padding
    for average in (False, True):
        expected = cpo_trainer.CPOTrainer.get_batch_logps(
            torch.tensor(logits), torch.tensor(labels), average_log_prob=average
        ).numpy()
        # TRL shifts inside; we take already-shifted targets
        targets, mask = labels[:, 1:], labels[:, 1:] != -100
        got = logprobs.sequence_logps(logits[:, :-1], targets, mask, average=average)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# (c) invariants
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.5])
def test_dpo_is_log2_when_policy_equals_reference(logps, eps):
    pc, pr = logps["policy_chosen_logps"], logps["policy_rejected_logps"]
    for beta in (0.1, 1.0):
        got = losses.dpo_loss(pc, pr, pc, pr, beta=beta, label_smoothing=eps)
        np.testing.assert_allclose(got, math.log(2), rtol=1e-6)
    np.testing.assert_allclose(losses.robust_dpo_loss(pc, pr, pc, pr), math.log(2), rtol=1e-6)


def test_label_smoothing_semantics():
    margins = jnp.linspace(-30.0, 30.0, 13)
    zero = jnp.zeros_like(margins)

    def dpo(m, eps):
        return losses.dpo_loss(m, zero, zero, zero, beta=0.1, label_smoothing=eps)

    # eps = 0.5 is *not* constant log 2: it is symmetric in the margin with its minimum, log 2,
    # at margin 0 (so it pulls the margin back to 0 rather than pushing it up).
    half = dpo(margins, 0.5)
    np.testing.assert_allclose(half, half[::-1], rtol=1e-6)
    assert float(half[6]) == pytest.approx(math.log(2)) and bool(
        jnp.all(half >= math.log(2) - 1e-6)
    )
    assert float(half[-1]) > math.log(2) + 0.1
    # eps = 1 is the eps = 0 loss with the labels swapped
    np.testing.assert_allclose(dpo(margins, 1.0), dpo(-margins, 0.0), rtol=1e-6)
    # robust DPO with eps = 0 is plain DPO
    np.testing.assert_allclose(
        losses.robust_dpo_loss(margins, zero, zero, zero), dpo(margins, 0.0), rtol=1e-6
    )


def test_ftx_weight_adds_length_normalised_nll(logps):
    combined, metrics = preference.preference_loss("sigmoid", **logps, beta=0.1, ftx_weight=0.1)
    pure = losses.dpo_loss(*_four(logps), beta=0.1)
    nll = -logps["policy_chosen_logps"] / logps["chosen_lengths"]
    np.testing.assert_allclose(combined - pure, 0.1 * nll, rtol=1e-4)
    np.testing.assert_allclose(metrics["loss"], float(jnp.mean(combined)), rtol=1e-6)
    np.testing.assert_allclose(metrics["loss/nll"], nll.mean(), rtol=1e-5)
    no_ftx, _ = preference.preference_loss("sigmoid", **logps, beta=0.1)
    np.testing.assert_allclose(no_ftx, pure, rtol=1e-6)


@pytest.mark.parametrize("name", sorted(preference.PREFERENCE_LOSSES))
def test_gradient_signs(name):
    # a point where every loss is active: small positive margin (inside the hinge, below IPO's
    # target 1/(2 beta) = 5 per token)
    args = {
        "policy_chosen_logps": jnp.full((3,), -20.0),
        "policy_rejected_logps": jnp.full((3,), -21.0),
        "reference_chosen_logps": jnp.full((3,), -20.5),
        "reference_rejected_logps": jnp.full((3,), -20.5),
        "chosen_lengths": jnp.full((3,), 10.0),
        "rejected_lengths": jnp.full((3,), 12.0),
    }

    def total(pc, pr):
        per_example, _ = preference.preference_loss(
            name, **{**args, "policy_chosen_logps": pc, "policy_rejected_logps": pr}, beta=0.1
        )
        return per_example.sum()

    d_chosen, d_rejected = jax.jit(jax.grad(total, argnums=(0, 1)))(
        args["policy_chosen_logps"], args["policy_rejected_logps"]
    )
    assert bool(jnp.all(d_chosen < 0)), d_chosen
    assert bool(jnp.all(d_rejected > 0)), d_rejected


def test_mask_zeroes_padding_examples(logps):
    mask = jnp.array([1, 1, 1, 0, 1, 0])
    bad = {k: v.copy() for k, v in logps.items()}
    bad["policy_chosen_logps"][3] = np.nan  # garbage in a padding example must not leak
    for name in preference.PREFERENCE_LOSSES:
        per_example, metrics = preference.preference_loss(
            name, **bad, beta=0.1, ftx_weight=0.1, mask=mask
        )
        full, _ = preference.preference_loss(name, **logps, beta=0.1, ftx_weight=0.1)
        np.testing.assert_array_equal(np.asarray(per_example)[[3, 5]], 0.0)
        np.testing.assert_allclose(per_example[mask == 1], full[mask == 1], rtol=1e-6)
        np.testing.assert_allclose(metrics["loss"], full[mask == 1].mean(), rtol=1e-5)
        assert all(bool(jnp.isfinite(v)) for v in metrics.values()), name


def test_losses_compute_in_float32(logps):
    bf16 = {k: jnp.asarray(v, jnp.bfloat16) for k, v in logps.items()}
    for name in preference.PREFERENCE_LOSSES:
        per_example, metrics = preference.preference_loss(name, **bf16, beta=0.1, ftx_weight=0.1)
        assert per_example.dtype == jnp.float32, name
        assert all(v.dtype == jnp.float32 for v in metrics.values()), name


def test_preference_loss_under_jit(logps):
    fn = jax.jit(preference.preference_loss, static_argnames="loss")
    got, _ = fn("sigmoid", **logps, beta=0.1, ftx_weight=0.1)
    eager, _ = preference.preference_loss("sigmoid", **logps, beta=0.1, ftx_weight=0.1)
    np.testing.assert_allclose(got, eager, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# vocabulary-chunked log-probs
# ---------------------------------------------------------------------------------------------


def _hidden_problem(v: int, dtype=jnp.float32):
    rng = np.random.default_rng(3)
    b, t, d = 2, 5, 8
    hidden = jnp.asarray(rng.normal(size=(b, t, d)), dtype)
    lm_head = jnp.asarray(rng.normal(size=(d, v)), dtype)
    targets = jnp.asarray(rng.integers(0, v, (b, t)))
    targets = targets.at[0, 0].set(v - 1).at[1, 0].set(0)  # both vocabulary edges
    mask = jnp.array([[1, 1, 1, 0, 0], [0, 1, 1, 1, 1]])
    return hidden, lm_head, targets, mask


@pytest.mark.parametrize(
    ("v", "chunk_size", "average"),
    [(37, 8, False), (40, 8, True), (37, 64, False), (37, 1, True)],  # ragged, even, 1 chunk, tiny
)
def test_chunked_matches_unchunked(v, chunk_size, average):
    hidden, lm_head, targets, mask = _hidden_problem(v)
    weights = jnp.array([0.7, -1.3])  # a weighted sum so every sequence's gradient matters

    def unchunked(h, w):
        logits = jnp.einsum("BTD,DV->BTV", h, w)
        return logprobs.sequence_logps(logits, targets, mask, average=average)

    def chunked(h, w):
        return logprobs.sequence_logps_from_hidden(
            h, w, targets, mask, chunk_size=chunk_size, average=average
        )

    @jax.jit
    def both(h, w):
        return [
            jax.grad(lambda h, w, f=f: (jnp.sum(weights * f(h, w)), f(h, w)), (0, 1), has_aux=True)(
                h, w
            )
            for f in (chunked, unchunked)
        ]

    (got_grads, got), (want_grads, want) = both(hidden, lm_head)
    np.testing.assert_allclose(got, want, atol=1e-5)
    for g, w in zip(got_grads, want_grads, strict=True):
        np.testing.assert_allclose(g, w, atol=1e-5)


@pytest.mark.parametrize(("v", "chunk_size"), [(37, 8), (37, 16), (40, 12)])
def test_chunked_overlap_columns_of_the_last_chunk(v, chunk_size):
    """The last chunk slides left to stay inside the vocabulary and shares columns with the
    chunk before it. Targets in those columns, on scored and on masked positions, count once."""
    num_chunks = -(-v // chunk_size)
    start, nominal = v - chunk_size, (num_chunks - 1) * chunk_size
    overlap = np.arange(start, nominal)  # columns both of the last two chunks hold
    assert overlap.size > 0
    rng = np.random.default_rng(5)
    b, t, d = 3, 8, 8
    hidden = jnp.asarray(rng.normal(size=(b, t, d)), jnp.float32)
    lm_head = jnp.asarray(rng.normal(size=(d, v)), jnp.float32)
    mask = np.ones((b, t), np.int32)
    mask[:, ::3] = 0  # every third position is not scored
    targets = rng.integers(0, v, (b, t))
    # Every overlap column is the target of a scored and of a masked position.
    scored, masked = np.argwhere(mask == 1), np.argwhere(mask == 0)
    for i, column in enumerate(overlap):
        targets[tuple(scored[i % len(scored)])] = column
        targets[tuple(masked[i % len(masked)])] = column
    targets, mask = jnp.asarray(targets), jnp.asarray(mask)
    weights = jnp.array([0.7, -1.3, 2.1])

    def unchunked(h, w):
        return logprobs.sequence_logps(jnp.einsum("BTD,DV->BTV", h, w), targets, mask)

    def chunked(h, w):
        return logprobs.sequence_logps_from_hidden(h, w, targets, mask, chunk_size=chunk_size)

    @jax.jit
    def value_and_grads(h, w):
        return [
            jax.value_and_grad(lambda h, w, f=f: jnp.sum(weights * f(h, w)), (0, 1))(h, w)
            for f in (chunked, unchunked)
        ]

    (got, got_grads), (want, want_grads) = value_and_grads(hidden, lm_head)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    for g, w in zip(got_grads, want_grads, strict=True):
        np.testing.assert_allclose(g, w, atol=1e-5)


def test_chunked_accepts_bf16_and_ignore_index():
    hidden, lm_head, targets, mask = _hidden_problem(37, jnp.bfloat16)
    padded = jnp.where(mask == 1, targets, -100)

    @jax.jit
    def both(hidden, lm_head):
        got = logprobs.sequence_logps_from_hidden(hidden, lm_head, padded, mask, chunk_size=16)
        logits = jnp.einsum("BTD,DV->BTV", hidden, lm_head, preferred_element_type=jnp.float32)
        return got, logprobs.sequence_logps(logits, targets, mask)

    got, want = both(hidden, lm_head)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_chunked_backward_does_not_materialise_full_logits():
    b, t, d, v = 4, 64, 16, 8000
    hidden, lm_head = jnp.ones((b, t, d)), jnp.ones((d, v))
    targets, mask = jnp.zeros((b, t), jnp.int32), jnp.ones((b, t))

    def temp_bytes(fn):
        grad = jax.jit(jax.grad(lambda h, w: fn(h, w).sum(), argnums=(0, 1)))
        analysis = grad.lower(hidden, lm_head).compile().memory_analysis()
        if analysis is None:
            pytest.skip("no memory analysis on this backend")
        return analysis.temp_size_in_bytes

    full_logits_bytes = b * t * v * 4
    chunked = temp_bytes(
        lambda h, w: logprobs.sequence_logps_from_hidden(h, w, targets, mask, chunk_size=512)
    )
    unchunked = temp_bytes(
        lambda h, w: logprobs.sequence_logps(jnp.einsum("BTD,DV->BTV", h, w), targets, mask)
    )
    assert unchunked >= full_logits_bytes  # the check can tell the difference
    assert chunked < full_logits_bytes / 3, (chunked, full_logits_bytes)


# ---------------------------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------------------------


def test_registry_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown preference loss 'dpo'.*hinge, ipo, robust"):
        preference.get_preference_loss("dpo")
    assert preference.get_preference_loss("sigmoid").fn is losses.dpo_loss


def test_preference_loss_argument_checks(logps):
    with pytest.raises(ValueError, match=r"gamma=0\.5 is not used by preference loss 'sigmoid'"):
        preference.preference_loss("sigmoid", **logps, gamma=0.5)
    with pytest.raises(
        ValueError, match=r"label_smoothing=0\.1 is not used by preference loss 'ipo'"
    ):
        preference.preference_loss("ipo", **logps, label_smoothing=0.1)
    preference.preference_loss("ipo", **logps, label_smoothing=0.0)  # 0 means off: accepted
    no_ref = {k: v for k, v in logps.items() if not k.startswith("reference")}
    with pytest.raises(ValueError, match="needs \\['reference_chosen_logps'"):
        preference.preference_loss("sigmoid", **no_ref)
    preference.preference_loss("simpo", **no_ref)  # reference-free
    no_len = {k: v for k, v in logps.items() if not k.endswith("lengths")}
    with pytest.raises(ValueError, match="ftx_weight"):
        preference.preference_loss("sigmoid", **no_len, ftx_weight=0.1)


def test_new_loss_is_one_function_and_one_registration(logps, monkeypatch):
    def exp_loss(policy_chosen_logps, policy_rejected_logps, *, beta, tau):
        return tau * jnp.exp(-beta * (jnp.asarray(policy_chosen_logps) - policy_rejected_logps))

    monkeypatch.setattr(preference, "PREFERENCE_LOSSES", dict(preference.PREFERENCE_LOSSES))
    preference.register(
        "exp", exp_loss, hyperparameters={"beta": 1.0, "tau": 1.0}, uses_reference=False
    )
    mask = jnp.array([1, 1, 1, 1, 0, 1])
    got, metrics = preference.preference_loss(
        "exp", **logps, beta=0.01, loss_kwargs={"tau": 2.0}, mask=mask
    )
    pc, pr = logps["policy_chosen_logps"], logps["policy_rejected_logps"]
    np.testing.assert_allclose(got, mask * 2.0 * np.exp(-0.01 * (pc - pr)), rtol=1e-5)
    # Reference-free and not length-normalised, as declared: rewards are beta x log pi.
    np.testing.assert_allclose(metrics["rewards/chosen"], 0.01 * pc[mask == 1].mean(), rtol=1e-5)


def test_reward_normalisation_is_declared_not_inferred(logps):
    """A length-normalised loss reports per-token rewards and a plain one summed ones, whatever
    their signatures say; an unscaled loss says so (no hidden beta = 1 fallback)."""
    pc, pr, rc, rr = _four(logps)
    nc, nr = logps["chosen_lengths"], logps["rejected_lengths"]

    def margin_loss(pc, pr, rc, rr, *, beta, chosen_lengths=None, rejected_lengths=None):
        return jax.nn.softplus(-beta * ((pc - rc) - (pr - rr)))

    summed = preference.PreferenceLoss(fn=margin_loss, hyperparameters={"beta": 0.2})
    _, m = preference.preference_loss(summed, **logps)
    np.testing.assert_allclose(m["rewards/chosen"], (0.2 * (pc - rc)).mean(), rtol=1e-5)
    per_token = preference.PreferenceLoss(
        fn=margin_loss, hyperparameters={"beta": 0.2}, length_normalized=True
    )
    _, m = preference.preference_loss(per_token, **logps)
    np.testing.assert_allclose(m["rewards/chosen"], (0.2 * (pc - rc) / nc).mean(), rtol=1e-5)
    np.testing.assert_allclose(m["rewards/rejected"], (0.2 * (pr - rr) / nr).mean(), rtol=1e-5)

    def no_beta(pc, pr, rc, rr, *, margin):
        return jax.nn.relu(margin - ((pc - rc) - (pr - rr)))

    with pytest.raises(ValueError, match="reward_scale='beta' is not one of"):
        preference.PreferenceLoss(fn=no_beta, hyperparameters={"margin": 1.0})
    unscaled = preference.PreferenceLoss(
        fn=no_beta, hyperparameters={"margin": 1.0}, reward_scale=None
    )
    _, m = preference.preference_loss(unscaled, **logps)
    np.testing.assert_allclose(m["rewards/chosen"], (pc - rc).mean(), rtol=1e-5)


def test_weights_count_once_in_the_metrics(logps):
    """Example weights of 0.5, checked by hand: each metric is sum(w x value) / sum(w)."""
    w = np.array([1.0, 0.5, 0.5, 1.0, 0.0, 0.5])
    beta = 0.1
    per_example, m = preference.preference_loss(
        "sigmoid", **logps, beta=beta, ftx_weight=0.1, mask=jnp.asarray(w)
    )
    pc, pr, rc, rr = _four(logps)
    dpo = -_log_sigmoid(beta * _margin(logps))
    nll = -pc / logps["chosen_lengths"]
    np.testing.assert_allclose(per_example, w * (dpo + 0.1 * nll), rtol=1e-5)
    total = w.sum()  # 3.5
    np.testing.assert_allclose(m["loss"], (w * (dpo + 0.1 * nll)).sum() / total, rtol=1e-5)
    np.testing.assert_allclose(m["loss/preference"], (w * dpo).sum() / total, rtol=1e-5)
    np.testing.assert_allclose(m["loss/nll"], (w * nll).sum() / total, rtol=1e-5)
    np.testing.assert_allclose(m["logps/chosen"], (w * pc).sum() / total, rtol=1e-5)
    chosen, rejected = beta * (pc - rc), beta * (pr - rr)
    np.testing.assert_allclose(m["rewards/chosen"], (w * chosen).sum() / total, rtol=1e-5)
    np.testing.assert_allclose(
        m["rewards/margins"], (w * (chosen - rejected)).sum() / total, rtol=1e-5
    )
    np.testing.assert_allclose(
        m["rewards/accuracies"], (w * (chosen > rejected)).sum() / total, rtol=1e-5
    )
