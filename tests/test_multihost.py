"""A real two-process run of the real command, joined as the launchers join them.

Two `python -m spar_jax train-dpo` processes on this machine, each with 2 CPU devices,
get only what launch/slurm.sbatch sets (SPAR_COORDINATOR, SPAR_NUM_PROCESSES,
SPAR_PROCESS_ID): the entry point must start the multi-host runtime itself (gloo
collectives over 127.0.0.1), or the (2, 2, 1) mesh finds 2 devices instead of 4.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from tests.xla import FAST_COMPILE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(ROOT, "configs", "dpo_demo.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _args(out_dir: str, toy_dir: str, mesh: str) -> list[str]:
    """train-dpo arguments shared by the two-process run and its single-process reference."""
    return [
        "train-dpo",
        "--config",
        DEMO,
        f"--config.out_dir={out_dir}",
        f"--config.toy_dir={toy_dir}",
        f"--config.mesh={mesh}",
        "--config.max_steps=3",
        "--config.epochs=1",
        "--config.checkpoint_every=2",
        "--config.eval_data=",
        "--config.progress=False",
        "--config.pad_to_multiple=64",  # one batch shape: one compilation
    ]


def _two_processes(args: list[str]) -> list[str]:
    """Runs `python -m spar_jax *args` as 2 processes of 2 CPU devices each, joined through
    only the variables the launchers set; returns their logs after both exit 0."""
    port = _free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SPAR_", "XLA_", "JAX_"))}
    procs = []
    for i in range(2):
        env = dict(
            base,
            PYTHONPATH=ROOT,
            JAX_PLATFORMS="cpu",
            XLA_FLAGS=f"--xla_force_host_platform_device_count=2 {FAST_COMPILE}",
            SPAR_COORDINATOR=f"127.0.0.1:{port}",
            SPAR_NUM_PROCESSES="2",
            SPAR_PROCESS_ID=str(i),
        )
        cmd = [sys.executable, "-m", "spar_jax", *args]
        procs.append(
            subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
        )
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=400)[0])
    finally:
        for p in procs:
            p.kill()
    for p, log in zip(procs, logs, strict=True):
        assert p.returncode == 0, log[-3000:]
    return logs


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The toy world and a two-process train-dpo run on a (2, 2, 1) mesh: (toy_dir, run)."""
    from spar_jax.training import toy

    root = tmp_path_factory.mktemp("multihost")
    toy_dir = str(root / "toy")
    toy.write_demo(toy_dir)  # written once, read by every process
    run = str(root / "run")
    _two_processes(_args(run, toy_dir, "(2,2,1)"))
    return toy_dir, run


def test_two_processes_of_the_command_join_write_once_and_match(trained, tmp_path):
    from spar_jax.cli import main

    toy_dir, run = trained
    assert sorted(f for f in os.listdir(run) if "metrics" in f) == ["metrics.jsonl"]
    with open(os.path.join(run, "metrics.jsonl")) as f:
        steps = [json.loads(line) for line in f]
    assert [s["step"] for s in steps] == [1, 2, 3]  # one log, written by process 0 only
    assert sorted(os.listdir(os.path.join(run, "checkpoints"))) == ["2", "3"]
    assert os.path.isfile(os.path.join(run, "final_native", "model_config.json"))

    single = str(tmp_path / "single")
    assert main(_args(single, toy_dir, "(1,-1,1)")) == 0  # this process: 8 devices, no runtime
    with open(os.path.join(single, "metrics.jsonl")) as f:
        want = [json.loads(line)["loss"] for line in f]
    np.testing.assert_allclose([s["loss"] for s in steps], want, rtol=1e-4)


def test_two_processes_evaluate_a_native_checkpoint(trained, tmp_path):
    """`eval judge` as two processes on the checkpoint the trainer exported: each process
    loads the weights onto its own devices, and one writes the report."""
    toy_dir, run = trained
    out = tmp_path / "judge.json"
    logs = _two_processes([
        "eval", "judge", "--config", os.path.join(ROOT, "configs", "eval_judge.py"),
        f"--config.model={run}/final_native", f"--config.tokenizer={toy_dir}/tokenizer",
        "--config.data=tasks", "--config.num_rows=4", "--config.votes=(1,)",
        "--config.max_new_tokens=8", "--config.dtype=float32", "--config.max_batch=4",
        f"--config.output={out}",
    ])  # fmt: skip
    report = json.loads(out.read_text())
    assert report["num_rows"] == len(report["rows"]) == 4
    assert 0.0 <= report["votes_1"]["accuracy"] <= 1.0
    assert [log.count(f"wrote {out}") for log in logs] == [1, 0]
