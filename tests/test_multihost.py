"""Real two-process JAX runs on this machine (gloo collectives over 127.0.0.1)."""

import json
import os
import socket
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_workers(outs, *extra) -> None:
    """Runs tests/multihost_worker.py as processes 0 and 1; fails with their output."""
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("XLA_FLAGS", None)
    procs = []
    for i, out in enumerate(outs):
        os.makedirs(out, exist_ok=True)
        worker = os.path.join(ROOT, "tests", "multihost_worker.py")
        cmd = [sys.executable, worker, str(port), str(i), str(out), *extra]
        procs.append(
            subprocess.Popen(
                cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
        )
    logs = []
    for p in procs:
        try:
            logs.append(p.communicate(timeout=300)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    for p, log in zip(procs, logs, strict=True):
        assert p.returncode == 0, log[-3000:]


def test_two_process_dpo_trainer_writes_once_and_matches(tmp_path):
    from spar_jax import configs
    from spar_jax.training import dpo, toy
    from tests.multihost_worker import multihost_dpo_overrides

    toy_dir = str(tmp_path / "toy")
    toy.write_demo(toy_dir)  # written once, read by every process
    run = str(tmp_path / "run")
    _run_workers([run, run], toy_dir)

    with open(os.path.join(run, "metrics.jsonl")) as f:
        steps = [json.loads(line) for line in f]
    assert [s["step"] for s in steps] == [1, 2, 3]  # one log, written by process 0 only
    assert os.path.isfile(os.path.join(run, "loss.png"))
    assert sorted(os.listdir(os.path.join(run, "checkpoints"))) == ["2", "3"]
    assert os.path.isfile(os.path.join(run, "final_native", "model_config.json"))

    config = configs.load(os.path.join(ROOT, "configs", "dpo_demo.py"))
    for key, value in multihost_dpo_overrides(str(tmp_path / "single"), toy_dir).items():
        config[key] = value
    dpo.train_dpo(config, log=lambda _: None)
    with open(tmp_path / "single" / "metrics.jsonl") as f:
        want = [json.loads(line)["loss"] for line in f]
    np.testing.assert_allclose([s["loss"] for s in steps], want, rtol=1e-4)
