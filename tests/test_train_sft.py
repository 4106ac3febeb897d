"""SFT trainer: the loss is the token mean over response targets only; it falls; accumulation;
bfloat16 compute; the `train-sft` command end to end (with resume)."""

from __future__ import annotations

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spar_jax import models
from spar_jax.training import steps, toy
from spar_jax.training.state import TrainState
from tests.test_train_dpo import SGD, B, T, V, assert_trees_close, copy, device_batch, small_model


@functools.cache
def sft_step(accum_steps: int = 1, dtype: str = "float32"):
    cfg, _ = small_model()
    return steps.compile_step(
        # chunk_size 24 < V: the vocabulary-chunked log-softmax inside the gradient (the DPO
        # tests run the one-chunk path).
        steps.make_sft_step(cfg.replace(dtype=dtype), SGD, accum_steps=accum_steps, chunk_size=24)
    )


def test_loss_is_the_token_mean_over_response_targets_only():
    cfg, params = small_model()
    # A sharper output layer, so that token log-probs differ and a wrong mask shows.
    params = dict(params, lm_head=params["lm_head"] * 50)
    batch = toy.sft_token_batch(np.random.default_rng(0), B, T, V, padding_rows=2)
    _, m = sft_step()(TrainState.create(copy(params), SGD), device_batch(batch))

    logits = jax.jit(lambda p, t, k: models.apply(cfg, p, t, mask=k)[0])(
        params, batch["tokens"], batch["mask"]
    )
    logp = np.asarray(jax.nn.log_softmax(logits, axis=-1))
    picked = np.take_along_axis(logp[:, :-1], batch["tokens"][:, 1:, None], axis=-1)[..., 0]
    target = batch["loss_mask"][:, 1:] & (batch["weight"] > 0)[:, None]
    expected = -(picked * target).sum() / target.sum()  # one mean over every target token
    assert float(m["loss"]) == pytest.approx(expected, rel=1e-5)
    assert float(m["tokens"]) == target.sum()
    # A mean over all real tokens (prompt included) is a different number: the check can fail.
    everything = batch["mask"][:, 1:] & (batch["weight"] > 0)[:, None]
    assert abs(-(picked * everything).sum() / everything.sum() - expected) > 0.01


def test_prompt_targets_do_not_enter_the_loss():
    cfg, params = small_model()
    batch = toy.sft_token_batch(np.random.default_rng(1), B, T, V)
    targets, target_mask = steps.shift_targets(batch["tokens"], batch["loss_mask"])
    fn = jax.jit(functools.partial(steps.target_logps, cfg))
    # Only target ids change (never the inputs): anywhere off the loss mask, nothing moves.
    scrambled = jnp.where(target_mask, targets, (targets * 7 + 3) % V)
    base = fn(params, batch["tokens"], batch["mask"], targets, target_mask)
    np.testing.assert_array_equal(
        fn(params, batch["tokens"], batch["mask"], scrambled, target_mask), base
    )
    # ...while changing one response target does move the log-prob of its row.
    changed = targets.at[0, int(np.argmax(np.asarray(target_mask[0])))].add(1)
    moved = fn(params, batch["tokens"], batch["mask"], changed, target_mask)
    assert float(moved[0]) != float(base[0])
    # And the loss mask of the step is the data's: the first prompt token is never a target.
    assert not np.asarray(target_mask)[:, -1].any()


def test_sft_lowers_the_loss():
    _, params = small_model()
    state = TrainState.create(copy(params), SGD)
    rng = np.random.default_rng(2)
    data = [device_batch(toy.sft_token_batch(rng, B, T, V)) for _ in range(2)]
    losses = []
    for i in range(30):  # two epochs of 15 over two batches
        state, m = sft_step()(state, data[i % 2])
        losses.append(float(m["loss"]))
    assert losses[-2] < losses[0] - 1.0 and losses[-1] < losses[1] - 1.0, losses


def test_gradient_accumulation_equals_one_big_batch():
    _, params = small_model()
    batch = device_batch(toy.sft_token_batch(np.random.default_rng(3), B, T, V, padding_rows=3))
    one, m1 = sft_step(1)(TrainState.create(copy(params), SGD), batch)
    four, m4 = sft_step(4)(TrainState.create(copy(params), SGD), batch)
    for key in m1:
        np.testing.assert_allclose(m4[key], m1[key], rtol=1e-5, atol=1e-7, err_msg=key)
    assert_trees_close(four.params, one.params)


def test_bfloat16_compute_keeps_float32_master_weights():
    _, params = small_model()
    batch = device_batch(toy.sft_token_batch(np.random.default_rng(4), B, T, V))
    _, m32 = sft_step()(TrainState.create(copy(params), SGD), batch)
    bf16, m16 = sft_step(1, "bfloat16")(TrainState.create(copy(params), SGD), batch)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(bf16.params))
    assert float(m16["loss"]) == pytest.approx(float(m32["loss"]), rel=2e-2)
    assert float(m16["loss"]) != float(m32["loss"])  # it really computed in bfloat16


def test_train_sft_command_and_resume(tmp_path, capsys):
    from spar_jax.__main__ import main

    out = tmp_path / "run"
    argv = [
        "train-sft",
        "--config",
        os.path.join(os.path.dirname(__file__), "..", "configs", "sft_demo.py"),
        f"--config.out_dir={out}",
        f"--config.toy_dir={tmp_path / 'toy'}",
        "--config.progress=False",
        "--config.pad_to_multiple=32",  # one batch shape: one compilation
        "--config.export=('hf',)",
        "--config.epochs=1",
    ]
    assert main([*argv, "--config.max_steps=2"]) == 0  # "killed" after 2 of 8 steps
    printed = capsys.readouterr().out
    assert "64/64 records used, 0 skipped" in printed and "2 steps" in printed
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "resumed from step 2" in printed and "6 steps" in printed
    records = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert [r["step"] for r in records] == list(range(1, 9))
    assert [r["batch"] for r in records] == list(range(8))
    assert (out / "loss.png").stat().st_size > 0
    cfg, params = models.load_hf(str(out / "final_hf"))
    assert cfg.vocab_size == 448 and jax.tree.leaves(params)
    # The same out_dir from other starting weights is not resumed: one line names both.
    assert main([*argv, "--config.seed=1"]) == 1
    error = capsys.readouterr().err
    assert "train-sft: error:" in error and len(error.strip().splitlines()) == 1
    assert "preset 'tiny' (seed 0)" in error and "preset 'tiny' (seed 1)" in error
    assert "resume=False" in error and str(out / "checkpoints") in error
