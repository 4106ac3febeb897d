"""launch/gpu_node.sh and launch/slurm.sbatch: dry-run plans, and real runs against fake
`srun` / `scontrol` executables (small scripts put first on PATH) that act out the nodes.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
import textwrap

import pytest

from tests.launch_fixtures import (
    COMMAND,
    GPU,
    ROOT,
    SLURM,
    SLURM_ENV,
    SLURM_PORT,
    TRICKY,
    _env,
    commands,
    dry_run,
    env_of,
    jax_version,
    run,
    user_command,
)

# ---------------------------------------------------------------------------
# One GPU node


def test_gpu_dry_run():
    lines = dry_run(GPU, "--gpus", "0,1,2,3", "--env", "NCCL_DEBUG=INFO", "--log", "logs/x.log")
    cmds = [c for line in lines for c in commands(line)]
    venv = str(ROOT / ".venv")
    assert cmds[:6] == [
        ["cd", str(ROOT)],
        ["mkdir", "-p", "logs"],
        ["python3", "-m", "venv", venv],
        [f"{venv}/bin/pip", "install", "--upgrade", "pip"],
        [f"{venv}/bin/pip", "install", "-r", "requirements.txt", f"jax[cuda12]=={jax_version()}"],
        [f"{venv}/bin/pip", "install", "--no-deps", "-e", "."],
    ]
    # The setup's output goes to the log as well as the command's.
    assert all(line.endswith(" 2>&1 | tee -a logs/x.log") for line in lines[2:])
    assert lines[-1].endswith(" 2>&1 | tee -a logs/x.log")
    words = commands(lines[-1])[0]
    env = env_of(words)
    assert env["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.9"
    assert env["CUDA_VISIBLE_DEVICES"] == "0,1,2,3"
    assert env["NCCL_DEBUG"] == "INFO"
    assert env["PATH"].startswith(f"{venv}/bin:")
    assert "SPAR_DISTRIBUTED" not in env  # one process: no distributed runtime
    assert user_command(words) == COMMAND


def test_gpu_setup_only_and_skip_install():
    proc = run(GPU, "--setup-only", "--dry-run", "--venv", "/shared/venv", "--python", "python3.11")
    assert proc.returncode == 0, proc.stderr
    cmds = [c for line in proc.stdout.splitlines() for c in commands(line)]
    assert cmds[2] == ["python3.11", "-m", "venv", "/shared/venv"]
    assert sum("| tee -a logs/gpu_node-" in line for line in proc.stdout.splitlines()) == 4
    lines = dry_run(GPU, "--skip-install", "--mem-fraction", ".75")
    assert not any("pip" in line for line in lines)
    assert env_of(commands(lines[-1])[0])["XLA_PYTHON_CLIENT_MEM_FRACTION"] == ".75"


def test_gpu_real_run(tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin/python").symlink_to(sys.executable)
    log = tmp_path / "run.log"
    probe = [
        "python",
        "-c",
        "import json, os, sys; "
        "print(json.dumps([sys.argv[1:], os.environ['XLA_PYTHON_CLIENT_MEM_FRACTION'], "
        "os.environ['CUDA_VISIBLE_DEVICES'], os.environ['VIRTUAL_ENV']])); sys.exit(3)",
        *TRICKY,
    ]
    args = ["--skip-install", "--venv", str(venv), "--log", str(log), "--gpus", "1"]
    proc = run(GPU, *args, "--", *probe)
    assert proc.returncode == 3
    expected = json.dumps([TRICKY, "0.9", "1", str(venv)])
    assert proc.stdout.strip() == expected
    assert log.read_text().strip() == expected
    assert proc.stderr.splitlines()[-1].endswith(f"failed with status 3; log in {log}")


# ---------------------------------------------------------------------------
# SLURM

NODE_LINE = re.compile(r"^# node (\d+) on (\S+) \(SLURM_PROCID=(\d+)\), log (\S+): (.*)$")


def slurm_plan(*args: str, env: dict[str, str] | None = None):
    lines = dry_run(SLURM, *args, env=_env({**SLURM_ENV, **(env or {})}))
    nodes = [NODE_LINE.match(line) for line in lines if line.startswith("# node")]
    srun = [c for line in lines for c in commands(line) if c[0] == "srun"]
    assert len(srun) == 1
    return lines, nodes, srun[0]


def test_slurm_dry_run_explicit():
    lines, nodes, srun = slurm_plan("--env", "NCCL_SOCKET_IFNAME=ib0")
    assert commands(lines[0])[0] == ["cd", str(ROOT)]
    assert {"--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--cpus-per-task=96"} <= set(srun)
    assert "--output=logs/slurm-4242/node-%n.log" in srun
    # Each task sets SPAR_PROCESS_ID from its own SLURM_PROCID, then runs the command.
    i = srun.index("bash")
    assert srun[i : i + 4] == [
        "bash",
        "-c",
        'export SPAR_PROCESS_ID="$SLURM_PROCID"; exec "$@"',
        "spar-task",
    ]
    task_env = env_of(srun)
    assert task_env["SPAR_COORDINATOR"] == f"gpu-a001:{SLURM_PORT}"
    assert task_env["SPAR_NUM_PROCESSES"] == "2"
    assert task_env["JAX_LOCAL_DEVICE_IDS"] == "0,1,2,3,4,5,6,7"
    assert task_env["NCCL_SOCKET_IFNAME"] == "ib0"
    assert user_command(srun) == COMMAND

    assert [(m[1], m[2], m[3], m[4]) for m in nodes] == [
        ("0", "gpu-a001", "0", "logs/slurm-4242/node-0.log"),
        ("1", "gpu-a002", "1", "logs/slurm-4242/node-1.log"),
    ]
    for rank, m in enumerate(nodes):
        words = shlex.split(m[5])
        node_env = env_of(words)
        assert node_env["SPAR_PROCESS_ID"] == str(rank)
        assert node_env["SPAR_COORDINATOR"] == f"gpu-a001:{SLURM_PORT}"
        assert node_env["SPAR_NUM_PROCESSES"] == "2"
        assert user_command(words) == COMMAND


def test_slurm_dry_run_auto_port_and_gpus():
    _, nodes, srun = slurm_plan(
        "--distributed",
        "auto",
        "--port",
        "23456",
        "--log-dir",
        "runs/x",
        env={"SLURM_GPUS_ON_NODE": "", "SLURM_GPUS_PER_NODE": "h100:4"},
    )
    assert "bash" not in srun  # JAX reads SLURM_PROCID itself
    task_env = env_of(srun)
    assert task_env["SPAR_DISTRIBUTED"] == "auto"
    assert task_env["JAX_COORDINATOR_PORT"] == "23456"
    assert task_env["JAX_LOCAL_DEVICE_IDS"] == "0,1,2,3"
    assert "SPAR_COORDINATOR" not in task_env
    assert "--output=runs/x/node-%n.log" in srun
    assert [m[4] for m in nodes] == ["runs/x/node-0.log", "runs/x/node-1.log"]


@pytest.mark.parametrize(
    "nodelist, hosts",
    [
        ("n[1,3-4],login", ["n1", "n3", "n4", "login"]),
        ("gpu[008-010]", ["gpu008", "gpu009", "gpu010"]),
        ("r[1-2]-g[01-02]", ["r1-g01", "r1-g02", "r2-g01", "r2-g02"]),
        ("solo", ["solo"]),
    ],
)
def test_slurm_nodelist_parser(tmp_path, nodelist, hosts):
    # A scontrol that fails: the script's own parser takes over.
    (tmp_path / "scontrol").write_text("#!/bin/sh\nexit 1\n")
    (tmp_path / "scontrol").chmod(0o755)
    path = f"{tmp_path}{os.pathsep}{os.environ['PATH']}"
    env = {"PATH": path, "SLURM_JOB_NODELIST": nodelist, "SLURM_NNODES": str(len(hosts))}
    _, nodes, _ = slurm_plan(env=env)
    assert [m[2] for m in nodes] == hosts
    assert all(f"SPAR_COORDINATOR={hosts[0]}:" in m[5] for m in nodes)


def test_slurm_real_run_against_fake_srun(tmp_path):
    """The real code path: a fake srun starts one local process per "node"."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text("#!/bin/sh\nprintf 'gpu-a001\\ngpu-a002\\n'\n")
    (bin_dir / "srun").write_text(
        f"#!{sys.executable}\n"
        + textwrap.dedent(
            """
            import os, subprocess, sys
            args = sys.argv[1:]
            opts = {}
            while args[0].startswith("--"):
                key, _, val = args.pop(0).partition("=")
                opts[key] = val
            status = 0
            for i in range(int(opts["--nodes"])):
                env = dict(os.environ, SLURM_PROCID=str(i), SLURM_LOCALID="0", SLURM_NODEID=str(i))
                with open(opts["--output"].replace("%n", str(i)), "w") as out:
                    rc = subprocess.run(args, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
                status = status or rc
            sys.exit(status)
            """
        )
    )
    for exe in ("scontrol", "srun"):
        (bin_dir / exe).chmod(0o755)
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin/python").symlink_to(sys.executable)
    probe = [
        "python",
        "-c",
        "import json, os, sys; keys = ['SPAR_COORDINATOR', 'SPAR_NUM_PROCESSES', "
        "'SPAR_PROCESS_ID', 'JAX_LOCAL_DEVICE_IDS']; "
        "print(json.dumps([sys.argv[1:]] + [os.environ[k] for k in keys]))",
        *TRICKY,
    ]
    log_dir = tmp_path / "logs"
    env = _env(SLURM_ENV, path_first=bin_dir)
    proc = run(SLURM, "--venv", str(venv), "--log-dir", str(log_dir), "--", *probe, env=env)
    assert proc.returncode == 0, proc.stderr
    for i in range(2):
        got = json.loads((log_dir / f"node-{i}.log").read_text())
        assert got == [TRICKY, f"gpu-a001:{SLURM_PORT}", "2", str(i), "0,1,2,3,4,5,6,7"]
