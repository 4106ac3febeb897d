"""Checkpoints: a killed run resumes exactly; a nan stops the run and keeps the last good
checkpoint; param-only exports load back."""

from __future__ import annotations

import os
import shutil

import jax
import numpy as np
import pytest

from spar_jax import models
from spar_jax.configs import load
from spar_jax.training import checkpoint, loop, toy
from spar_jax.training.dpo import train_dpo
from spar_jax.training.state import TrainState
from tests.test_train_dpo import SGD, B, T, V, assert_trees_close, copy, small_model
from tests.test_train_sft import sft_step

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs")


def dpo_config(tmp_path, name, **overrides):
    # The settings of test_train_dpo's command test, so that a process running both compiles
    # the step once (train_step_for is memoised).
    config = load(os.path.join(CONFIGS, "dpo_demo.py"))
    config.out_dir = str(tmp_path / name)
    config.toy_dir = str(tmp_path / "toy")
    config.progress = False
    config.pad_to_multiple = 64
    config.export = ()
    config.update(overrides)
    return config


def test_killed_run_resumes_exactly(tmp_path):
    quiet = dict(log=lambda _: None)
    full = train_dpo(dpo_config(tmp_path, "full"), **quiet)
    assert full.loop.steps_run == 16  # 2 epochs x 8 batches

    # Killed after step 11 (in epoch 1) before its checkpoint was written: the last is step 8.
    killed = dpo_config(tmp_path, "killed", max_steps=11, checkpoint_every=4)
    train_dpo(killed, **quiet)
    shutil.rmtree(tmp_path / "killed" / "checkpoints" / "11")
    killed.max_steps = 0
    resumed = train_dpo(killed, **quiet)
    assert resumed.loop.steps_run == 8  # steps 9..16, from epoch 1, batch 0

    assert_trees_close(resumed.loop.state.params, full.loop.state.params, rtol=1e-6, atol=1e-8)
    assert_trees_close(resumed.loop.state.opt_state, full.loop.state.opt_state, rtol=1e-6)
    np.testing.assert_array_equal(resumed.loop.state.rng, full.loop.state.rng)
    assert resumed.loop.last["loss"] == pytest.approx(full.loop.last["loss"], rel=1e-6)
    assert resumed.eval == pytest.approx(full.eval, rel=1e-5)


def sft_source(poison_at: int | None = None):
    """Deterministic SFT batches by (epoch, index); the batch ``poison_at`` of epoch 0 gets a
    nan weight (a corrupt record)."""

    def source(epoch: int, start: int):
        for i in range(start, 4):
            batch = toy.sft_token_batch(np.random.default_rng([epoch, i]), B, T, V)
            batch["index"] = batch["index"] + 100 * i
            if (epoch, i) == (0, poison_at):
                batch["weight"][1] = np.nan
            yield batch

    return source


def run_sft(tmp_path, name, source, **kw):
    _, params = small_model()
    state = TrainState.create(copy(params), SGD)
    ckpt = checkpoint.Checkpointer(str(tmp_path / name / "ckpt"), max_to_keep=1)
    cfg = loop.LoopConfig(epochs=2, batches_per_epoch=4, progress=False, **kw)
    try:
        return loop.run(
            state, sft_step(), source, cfg, out_dir=str(tmp_path / name), checkpointer=ckpt
        ), ckpt
    finally:
        ckpt.close()


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    good, _ = run_sft(tmp_path, "good", sft_source(), max_steps=2)
    with pytest.raises(loop.NonFiniteLossError) as info:
        run_sft(tmp_path, "bad", sft_source(poison_at=2), checkpoint_every=1)
    message = str(info.value)
    assert "step 3" in message and "epoch 0, batch 2" in message
    assert "records [200, 201, 202" in message  # the batch's record indices
    assert "last good checkpoint is step 2" in message

    ckpt = checkpoint.Checkpointer(str(tmp_path / "bad" / "ckpt"), max_to_keep=1)
    assert ckpt.all_steps() == [2]  # keeps 1 (step 1 was deleted); the nan state never saved
    _, params = small_model()
    restored = ckpt.restore(TrainState.create(copy(params), SGD))
    ckpt.close()
    assert int(restored.step) == 2 and (int(restored.epoch), int(restored.batch_index)) == (0, 2)
    assert_trees_close(restored.params, good.state.params, rtol=0, atol=0)


@pytest.mark.parametrize("fmt", ["native", "hf"])
def test_param_only_export_loads_back(tmp_path, fmt):
    cfg, params = small_model()
    path = checkpoint.export_params(cfg, params, str(tmp_path / fmt), fmt)
    if fmt == "native":
        from spar_jax.models import native

        cfg2, params2 = native.load_native(path)
    else:
        cfg2, params2 = models.load_hf(path)
    assert cfg2.vocab_size == cfg.vocab_size and cfg2.num_layers == cfg.num_layers
    assert jax.tree.structure(params2) == jax.tree.structure(params)
    assert_trees_close(params2, params, rtol=0, atol=0)
