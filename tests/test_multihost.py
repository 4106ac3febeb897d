"""A real two-process JAX run on this machine: sharded DPO steps equal the single-process ones."""

import json
import os
import socket
import subprocess
import sys

import numpy as np

from tests.test_sharded_training import dpo_setup, run_dpo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_single_process(tmp_path):
    port = _free_port()
    outs = [tmp_path / f"p{i}" for i in range(2)]
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("XLA_FLAGS", None)
    procs = []
    for i, out in enumerate(outs):
        out.mkdir()
        cmd = [
            sys.executable,
            os.path.join(ROOT, "tests", "multihost_worker.py"),
            str(port),
            str(i),
            str(out),
        ]
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

    # Process 0 alone writes outputs.
    assert os.listdir(outs[0]) == ["losses.json"]
    assert os.listdir(outs[1]) == []
    got = json.loads((outs[0] / "losses.json").read_text())
    assert got["devices"] == 4
    want = run_dpo(*dpo_setup())
    np.testing.assert_allclose(got["losses"], want, rtol=1e-5)
