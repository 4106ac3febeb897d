"""Checkpoints: a killed run resumes exactly; a nan stops the run and keeps the last good
checkpoint; param-only exports load back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

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
    config = load(os.path.join(CONFIGS, "dpo_demo.py"))
    config.out_dir = str(tmp_path / name)
    config.toy_dir = str(tmp_path / "toy")
    config.progress = False
    config.pad_to_multiple = 64
    config.export = ()
    config.update(overrides)
    return config


# Runs the real command in a child process that is killed (SIGKILL, nothing flushed or closed)
# right after it logs step ``kill_after``: the crash hook lives here, not in the library.
_KILLED_RUN = """
import os, signal, sys
from spar_jax.training import metrics

kill_after = int(sys.argv[1])
log = metrics.MetricsLogger.log

def log_then_die(self, step, *args, **kwargs):
    record = log(self, step, *args, **kwargs)
    if step == kill_after:
        os.kill(os.getpid(), signal.SIGKILL)
    return record

metrics.MetricsLogger.log = log_then_die
from spar_jax.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_killed_run_resumes_exactly(tmp_path):
    quiet = dict(log=lambda _: None)
    full = train_dpo(dpo_config(tmp_path, "full"), **quiet)
    assert full.loop.steps_run == 16  # 2 epochs x 8 batches

    # Killed after step 11 (in epoch 1), between the checkpoints of steps 8 and 12.
    killed = dpo_config(tmp_path, "killed", checkpoint_every=4)
    argv = ["train-dpo", "--config", os.path.join(CONFIGS, "dpo_demo.py")]
    argv += [f"--config.{k}={killed[k]}" for k in ("out_dir", "toy_dir", "checkpoint_every")]
    argv += ["--config.progress=False", "--config.pad_to_multiple=64", "--config.export=()"]
    env = dict(os.environ, JAX_DEFAULT_MATMUL_PRECISION="highest")
    root = os.path.join(os.path.dirname(__file__), "..")
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED_RUN, "11", *argv], cwd=root, env=env, capture_output=True
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    log = tmp_path / "killed" / "metrics.jsonl"
    assert [json.loads(line)["step"] for line in open(log)] == list(range(1, 12))
    with checkpoint.Checkpointer(str(tmp_path / "killed" / "checkpoints")) as ckpt:
        last_checkpoint = ckpt.latest_step()
    assert last_checkpoint in (4, 8)  # 8 unless the kill caught its asynchronous save

    resumed = train_dpo(killed, **quiet)
    assert resumed.loop.steps_run == 16 - last_checkpoint
    records = [json.loads(line) for line in open(log)]
    assert [r["step"] for r in records] == list(range(1, 17))  # each step once
    want = [json.loads(line) for line in open(tmp_path / "full" / "metrics.jsonl")]
    for got, ref in zip(records, want, strict=True):
        assert (got["epoch"], got["batch"]) == (ref["epoch"], ref["batch"])
        assert got["loss"] == pytest.approx(ref["loss"], rel=1e-6), got["step"]

    assert_trees_close(resumed.loop.state.params, full.loop.state.params, rtol=1e-6, atol=1e-8)
    assert_trees_close(resumed.loop.state.opt_state, full.loop.state.opt_state, rtol=1e-6)
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
