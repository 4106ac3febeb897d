"""DPO and SFT steps on 8 fake CPU devices equal the single-device step."""

import jax
import numpy as np
import pytest

from spar_jax import models, sharding
from spar_jax.training import optim, placement, steps
from spar_jax.training.state import TrainState

MESHES = [(8, 1, 1), (2, 4, 1), (2, 2, 2)]
B, T = 8, 16


def _rows(rng, vocab, prompt_len, length):
    tokens = rng.integers(3, vocab, (B, T)).astype(np.int32)
    mask = np.zeros((B, T), bool)
    loss_mask = np.zeros((B, T), bool)
    for i in range(B):
        n = length[i]
        mask[i, :n] = True
        loss_mask[i, prompt_len[i] : n] = True
    tokens[~mask] = 0
    return tokens, mask, loss_mask


def _dpo_batch(vocab, seed=0):
    rng = np.random.default_rng(seed)
    prompt = rng.integers(2, 6, B)
    batch = {}
    for side in ("chosen", "rejected"):
        length = prompt + rng.integers(3, T - 6, B)
        t, m, lm = _rows(rng, vocab, prompt, length)
        batch.update({f"{side}_tokens": t, f"{side}_mask": m, f"{side}_loss_mask": lm})
    batch["weight"] = np.array([1] * (B - 1) + [0], np.float32)  # one padding row
    batch["reference_chosen_logps"] = rng.normal(-40, 3, B).astype(np.float32)
    batch["reference_rejected_logps"] = rng.normal(-40, 3, B).astype(np.float32)
    return batch


def _sft_batch(vocab, seed=1):
    rng = np.random.default_rng(seed)
    prompt = rng.integers(2, 6, B)
    t, m, lm = _rows(rng, vocab, prompt, prompt + rng.integers(3, T - 6, B))
    return {"tokens": t, "mask": m, "loss_mask": lm, "weight": np.ones(B, np.float32)}


@pytest.fixture(scope="module")
def setup():
    cfg = models.preset("tiny", vocab_size=96)
    params = models.init_params(cfg, jax.random.key(0))
    # Adam divides by sqrt(v): on a near-zero gradient, reduction-order noise of 1e-9 would
    # flip the update's sign. A larger eps keeps the comparison about the sharded computation.
    opt = optim.OptimizerConfig(learning_rate=1e-3, eps=1e-4)
    tx, schedule = optim.make_optimizer(opt, total_steps=4)
    return cfg, params, tx, schedule


def _make_step(kind, cfg, tx, schedule):
    if kind == "dpo":
        return steps.make_dpo_step(cfg, tx, ftx_weight=0.1, schedule=schedule, accum_steps=2)
    return steps.make_sft_step(cfg, tx, schedule=schedule, accum_steps=2)


def _run(kind, setup, mesh=None):
    """Two steps, on one device or sharded over `mesh`."""
    cfg, params, tx, schedule = setup
    batch = _dpo_batch(cfg.vocab_size) if kind == "dpo" else _sft_batch(cfg.vocab_size)
    state = TrainState.create(jax.tree.map(np.array, params), tx)
    fn = _make_step(kind, cfg, tx, schedule)
    if mesh is None:
        step = steps.compile_step(fn)
        for _ in range(2):
            state, metrics = step(state, batch)
        return state, metrics
    state_sh = placement.state_shardings(cfg, tx, state, mesh)
    batch_sh = sharding.batch_shardings(batch, mesh)
    state = jax.device_put(state, state_sh)
    with sharding.context(mesh, sharding.TRAIN_RULES):
        step = steps.compile_step(fn, state_sh, batch_sh)
        for _ in range(2):
            state, metrics = step(state, sharding.shard_batch(batch, mesh))
    return state, metrics


@pytest.fixture(scope="module", params=["dpo", "sft"])
def single(request, setup):
    return request.param, _run(request.param, setup)


@pytest.mark.parametrize("shape", MESHES)
def test_sharded_step_matches_single_device(single, setup, shape):
    kind, (want_state, want_metrics) = single
    mesh = sharding.make_mesh(shape)
    state, metrics = _run(kind, setup, mesh)
    np.testing.assert_allclose(float(metrics["loss"]), float(want_metrics["loss"]), rtol=1e-5)
    np.testing.assert_allclose(
        float(metrics["grad_norm"]), float(want_metrics["grad_norm"]), rtol=1e-4
    )
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-6),
        state.params,
        want_state.params,
    )
    # The state really is sharded the way the rules say.
    q = state.params["layers"]["attn"]["q"]
    assert q.sharding.spec == sharding.param_shardings(setup[0], mesh)["layers"]["attn"]["q"].spec
    if shape[1] > 1:
        assert q.addressable_shards[0].data.shape[1] == q.shape[1] // shape[1]
        mu = jax.tree.leaves(state.opt_state, is_leaf=lambda x: hasattr(x, "mu"))
        moments = [leaf.mu for leaf in mu if hasattr(leaf, "mu")]
        assert moments and moments[0]["layers"]["attn"]["q"].sharding == q.sharding
