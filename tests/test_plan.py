"""The memory planner against XLA's buffer assignment of the real train steps, and its command."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from spar_jax import models, plan
from spar_jax.__main__ import main
from spar_jax.training import optim, steps
from spar_jax.training.state import TrainState

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _measured(cfg, kind, batch_size, length, accum, chunk):
    """Argument + temporary bytes of the compiled step: what is live at its peak."""
    tx, _ = optim.make_optimizer(optim.OptimizerConfig(learning_rate=1e-3), 10)
    state = jax.eval_shape(
        lambda: TrainState.create(models.init_params(cfg, jax.random.key(0)), tx)
    )

    def arr(dtype, *shape):
        return jax.ShapeDtypeStruct(shape, dtype)

    if kind == "dpo":
        fn = steps.make_dpo_step(cfg, tx, accum_steps=accum, chunk_size=chunk, ftx_weight=0.1)
        batch = {
            f"{side}_{k}": arr(jnp.int32 if k == "tokens" else bool, batch_size, length)
            for side in ("chosen", "rejected")
            for k in ("tokens", "mask", "loss_mask")
        }
        batch["reference_chosen_logps"] = batch["reference_rejected_logps"] = arr(
            jnp.float32, batch_size
        )
    else:
        fn = steps.make_sft_step(cfg, tx, accum_steps=accum, chunk_size=chunk)
        batch = {
            k: arr(jnp.int32 if k == "tokens" else bool, batch_size, length)
            for k in ("tokens", "mask", "loss_mask")
        }
    batch["weight"] = arr(jnp.float32, batch_size)
    m = jax.jit(fn, donate_argnums=(0,)).lower(state, batch).compile().memory_analysis()
    return m.argument_size_in_bytes + m.temp_size_in_bytes


@pytest.mark.parametrize(
    "kind, remat, batch_size, length, accum, chunk",
    [
        ("dpo", "full", 8, 128, 1, 512),
        ("dpo", "none", 8, 128, 1, 128),
        ("sft", "full", 8, 256, 2, 128),
    ],
)
def test_plan_within_20_percent_of_compiled_step(kind, remat, batch_size, length, accum, chunk):
    cfg = models.preset("tiny", remat_policy=remat)
    measured = _measured(cfg, kind, batch_size, length, accum, chunk)
    planned = plan.plan(
        cfg,
        (1, 1, 1),
        task=kind,
        batch_size=batch_size,
        length=length,
        grad_accum_steps=accum,
        chunk_size=chunk,
    ).total
    assert 0.8 <= planned / measured <= 1.2, (planned, measured)


def test_param_bytes_are_exact_per_device():
    cfg = models.preset("llama3_8b")
    total = models.count_params(cfg) * 4
    per_device = plan.param_bytes(cfg, (1, 8, 1))
    # Everything but the (replicated) norm scales splits 8 ways.
    norms = (2 * cfg.num_layers + 1) * cfg.hidden_size * 4
    assert per_device == (total - norms) // 8 + norms


def test_kv_cache_is_exact():
    cfg = models.preset("llama3_8b", dtype="bfloat16")
    p = plan.plan(cfg, (1, 1, 8), task="sample", batch_size=256, length=4096)
    assert p.kv_cache == 2 * 32 * 256 * 4096 * 1 * 128 * 2  # 8 KV heads over tensor=8
    assert p.kv_cache == models.cache_bytes(cfg, 256, 4096) // 8 - (256 * 4096 + 4) // 8


def test_plan_command_refuses_what_does_not_fit(capsys):
    args = ["plan", "--preset", "llama3_70b", "--task", "dpo", "--mesh", "1,-1,1", "--devices", "8"]
    assert main([*args, "--device", "h100", "--length", "2048"]) == 1
    out = capsys.readouterr().out
    assert "DOES NOT FIT" in out and "optimizer state" in out
    assert (
        main(
            [
                *args[:-2],
                "--devices",
                "64",
                "--device",
                "v5p",
                "--remat",
                "full",
                "--dtype",
                "bfloat16",
                "--grad-accum-steps",
                "8",
            ]
        )
        == 0
    )
    assert "fits" in capsys.readouterr().out


def test_plan_command_mesh_mismatch_names_both_numbers(capsys):
    assert main(["plan", "--preset", "tiny", "--mesh", "2,8,1", "--devices", "8"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs 16 devices, but 8 are available" in err


def test_trainer_refuses_a_run_that_cannot_fit(monkeypatch, tmp_path):
    from spar_jax import configs
    from spar_jax.training import placement, sft

    monkeypatch.setattr(placement, "device_memory_bytes", lambda: 1024**2)  # a 1 MiB device
    config = configs.load(
        "configs/sft_demo.py",
        [f"--config.out_dir={tmp_path}/run", f"--config.toy_dir={tmp_path}/toy"],
    )
    with pytest.raises(
        MemoryError, match=r"(?s)does not fit: .*total +\d+\.\d+ MiB.*device memory 1.00 MiB"
    ):
        sft.train_sft(config, log=lambda _: None)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def _plan_command(*args: str) -> subprocess.CompletedProcess:
    """`python -m spar_jax plan ARGS` in a fresh process, as a user runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPAR_")}
    return subprocess.run(
        [sys.executable, "-m", "spar_jax", "plan", *args],
        cwd=ROOT,
        env=dict(env, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu"),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_plan_command_reads_the_model_the_config_names(tmp_path):
    """A checkpoint directory with only a config.json (HF) or model_config.json (native)."""
    cfg = models.preset("llama3_2_1b")  # not the config's own model (LLaMA-3-8B)
    hf_dir, native_dir = tmp_path / "hf", tmp_path / "native"
    hf_dir.mkdir()
    native_dir.mkdir()
    (hf_dir / "config.json").write_text(json.dumps(models.config_to_hf(cfg)))
    (native_dir / "model_config.json").write_text(cfg.to_json())
    config = ["--config", "configs/dpo_llama3_8b.py", "--devices", "8", "--device", "h100"]
    from spar_jax import configs

    c = configs.load("configs/dpo_llama3_8b.py")
    want = plan.plan(
        cfg.replace(remat_policy=c.remat, dtype=c.compute_dtype),
        (1, 8, 1),
        batch_size=c.batch_size,
        length=c.max_length,
        grad_accum_steps=c.grad_accum_steps,
        chunk_size=c.chunk_size,
    )
    for d in (hf_dir, native_dir):
        r = _plan_command(*config, f"--config.model={d}")
        assert r.returncode == 0, r.stderr
        assert f"{models.count_params(cfg):,} parameters" in r.stdout
        assert "per-device memory" in r.stdout
        total = f"  {'total':<20} {plan.size_str(want.total):>12}"
        assert total in r.stdout.splitlines()  # with the config's batch, length and mesh
    r = _plan_command(*config, f"--config.model={hf_dir}", "--preset", "llama3_8b")
    assert f"{models.count_params(models.preset('llama3_8b')):,} parameters" in r.stdout
    r = _plan_command(*config, f"--config.model={tmp_path / 'missing'}")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert "missing' is neither a preset nor a directory" in r.stderr
