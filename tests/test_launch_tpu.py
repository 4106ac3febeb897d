"""launch/tpu_pod.sh against a fake `gcloud` (tests/fake_gcloud.py) that plays a scripted world.

The launcher runs from a small git repository that mirrors this one (launch/, the package,
requirements.txt, .gitignore) and also holds what must never be shipped: virtualenvs under
several names and a large ignored file. The fake's "workers" share one home directory in
tmp_path; jobs started there are real detached processes.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FAKE = Path(__file__).resolve().parent / "fake_gcloud.py"
GCLOUD = ["gcloud", "compute", "tpus"]
BASE = ["--name", "fake", "--zone", "z", "--run-id", "run-1"]


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A git checkout with launch/ and the package, plus things git would not commit."""
    repo = tmp_path_factory.mktemp("checkout")
    tracked = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "launch", "spar_jax", "requirements.txt"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for rel in [*tracked, ".gitignore"]:
        if (ROOT / rel).is_file():
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, repo / rel)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "add", "."], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "mirror"], cwd=repo, check=True)
    (repo / "notes.md").write_text("untracked, not ignored: shipped\n")
    for venv in ("venv", ".venv-test", "venv2", "env"):  # venv2/ matches no .gitignore rule
        (venv_bin := repo / venv / "bin").mkdir(parents=True)
        (repo / venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
        (venv_bin / "python").write_text("#!/bin/sh\n")
    (repo / "runs").mkdir()
    with open(repo / "runs/model.bin", "wb") as f:  # ignored; 64 MB, sparse
        f.truncate(64 << 20)
    return repo


class World:
    """The fake gcloud's world: scripted VMs, recorded calls, the workers' home."""

    def __init__(self, root: Path, repo: Path):
        self.dir, self.repo = root, repo
        self.home = root / "home"
        self.logs = root / "logs"
        bin_dir = root / "bin"
        for d in (self.home / "spar_jax/.venv/bin", bin_dir, root / "tmp"):
            d.mkdir(parents=True)
        # The workers' virtualenv puts this test's python first on PATH.
        (self.home / "spar_jax/.venv/bin/activate").write_text(
            f"PATH={shlex.quote(str(Path(sys.executable).parent))}:$PATH\n"
        )
        (bin_dir / "gcloud").write_text(
            f'#!/bin/sh\nexec {shlex.quote(sys.executable)} {shlex.quote(str(FAKE))} "$@"\n'
        )
        (bin_dir / "gcloud").chmod(0o755)
        self.env = {
            k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SPAR_", "XLA_"))
        }
        self.env.update(
            PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            FAKE_GCLOUD_DIR=str(root),
            TMPDIR=str(root / "tmp"),
        )

    def script(self, **world) -> None:
        (self.dir / "world.json").write_text(json.dumps(world))

    def state(self) -> dict:
        return json.loads((self.dir / "world.json").read_text())

    def calls(self) -> list[list[str]]:
        path = self.dir / "calls.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        return [["gcloud", *json.loads(line)] for line in lines]

    def verbs(self) -> list[str]:
        return [" ".join(c[3:5]) for c in self.calls()]

    def argv(self, *args: str, command: list[str] | None = None) -> list[str]:
        argv = ["bash", str(self.repo / "launch/tpu_pod.sh"), *BASE, *args]
        argv += ["--log-dir", str(self.logs)]
        return argv + (["--", *command] if command else [])

    def launch(self, *args: str, command: list[str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.argv(*args, command=command),
            capture_output=True,
            text=True,
            env=self.env,
            timeout=60,
        )

    def job_dir(self) -> Path:
        return self.home / "spar_jax/logs/fake"

    def kill_jobs(self) -> None:
        for pid_file in self.home.glob("**/job.pid"):
            try:
                os.killpg(int(pid_file.read_text()), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass


@pytest.fixture
def world(tmp_path, repo):
    w = World(tmp_path, repo)
    yield w
    w.kill_jobs()


def probe(tmp: Path, status: int = 0, wait_for: Path | None = None) -> list[str]:
    """A job that prints its arguments, environment and session, counts its starts, and exits."""
    code = (
        "import json, os, sys, time, pathlib; "
        f"pathlib.Path({str(tmp / 'starts')!r}).open('a').write('x'); "
        f"w = {str(wait_for) if wait_for else ''!r}; "
        "[time.sleep(0.05) for _ in range(600) if w and not os.path.exists(w)]; "
        "print(json.dumps({'args': sys.argv[1:], 'dist': os.environ['SPAR_DISTRIBUTED'], "
        "'sid': os.getsid(0), 'stdin': os.isatty(0) or sys.stdin.read()})); "
        f"sys.exit({status})"
    )
    return ["python", "-c", code, "it's", "a b", ""]


def job_output(text: str) -> dict:
    return json.loads(next(line for line in text.splitlines() if line.startswith("{")))


def wait_until(predicate, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


# ---------------------------------------------------------------------------


def test_run_ships_git_files_detaches_and_matches_dry_run(world):
    (world.job_dir()).mkdir(parents=True)
    (world.job_dir() / "worker.log").write_text("an earlier run's output\n")
    args = ["--type", "v4-16", "--delete", "--skip-install"]
    cmd = probe(world.dir, status=3)
    proc = world.launch(*args, command=cmd)
    assert proc.returncode == 3, proc.stderr
    assert "failed with status 3" in proc.stderr.splitlines()[-1]

    # What ran is what --dry-run prints.
    plan = world.launch(*args, "--dry-run", command=cmd)
    assert plan.returncode == 0 and plan.stderr == ""
    planned = [shlex.split(line.split(" 2>&1 | tee")[0]) for line in plan.stdout.splitlines()]
    assert [c for c in planned if c[0] == "gcloud"] == world.calls()
    assert world.verbs() == [
        "tpu-vm describe",
        "tpu-vm create",
        "tpu-vm scp",
        "tpu-vm ssh",  # unpack
        "tpu-vm ssh",  # start and follow
        "tpu-vm scp",
        "tpu-vm scp",  # v4-16: two workers' logs
        "tpu-vm delete",  # created by this run
    ]

    # The archive held the files git would commit, and nothing else.
    (archive,) = (world.dir / "uploads").iterdir()
    names = tarfile.open(archive).getnames()
    assert {"spar_jax/__init__.py", "launch/tpu_pod.sh", "notes.md"} <= set(names)
    assert not {n.split("/")[0] for n in names} & {"venv", ".venv-test", "venv2", "env", "runs"}
    assert archive.stat().st_size < 8 << 20  # the sources and the demo's 3.9 MB seed model
    shipped = world.home / "spar_jax"
    assert (shipped / "spar_jax/__init__.py").is_file()
    assert (shipped / "launch/tpu_pod.sh").is_file() and (shipped / "notes.md").is_file()
    for absent in ("venv", ".venv-test", "venv2", "env", "runs", ".git"):
        assert not (shipped / absent).exists(), absent
    assert not list((world.dir / "tmp").iterdir())  # the archive and its list were removed

    # The job ran detached (its own session, stdin closed) with its arguments intact, and
    # appended to the worker's log.
    log = (world.job_dir() / "worker.log").read_text()
    assert log.startswith("an earlier run's output\n== run run-1, ")
    out = job_output(log)
    assert out["args"] == ["it's", "a b", ""] and out["dist"] == "auto"
    assert out["sid"] == int((world.job_dir() / "job.pid").read_text())
    assert out["stdin"] == ""
    assert (world.job_dir() / "job.status").read_text().strip() == "3"
    for i in range(2):
        assert job_output((world.logs / f"worker-{i}.log").read_text()) == out
    assert "earlier" not in (world.logs / "ssh.log").read_text()  # follows this run only
    assert job_output((world.logs / "ssh.log").read_text()) == out
    assert "[fake scp]" in (world.logs / "setup.log").read_text()


def test_preempted_vm_is_deleted_and_recreated(world):
    world.script(nodes={"fake": {"state": "PREEMPTED", "type": "v4-8"}})
    proc = world.launch("--type", "v4-8", "--skip-copy", "--skip-install", command=["true"])
    assert proc.returncode == 0, proc.stderr
    assert world.verbs()[:3] == ["tpu-vm describe", "tpu-vm delete", "tpu-vm create"]
    assert "PREEMPTED" in proc.stderr
    assert world.state()["nodes"]["fake"] == {"state": "READY", "type": "v4-8"}


def test_failed_create_stops_without_a_false_alarm(world):
    (world.dir / "world.json").write_text(json.dumps({"fail_create": True}))
    proc = world.launch("--type", "v4-8", "--delete", command=["true"])
    assert proc.returncode == 1
    assert "RESOURCE_EXHAUSTED" in proc.stderr and "could not delete" not in proc.stderr
    assert world.verbs() == [
        "tpu-vm describe",
        "tpu-vm create",
        "tpu-vm delete",  # in case the create got halfway
        "tpu-vm describe",
    ]


def test_type_mismatch_stops(world):
    world.script(nodes={"fake": {"state": "READY", "type": "v4-8"}})
    proc = world.launch("--type", "v5p-8", "--delete", command=["true"])
    assert proc.returncode == 1
    (error,) = [line for line in proc.stderr.splitlines() if "is a v4-8" in line]
    assert error.startswith("launch/tpu_pod.sh: TPU VM fake is a v4-8, not the --type v5p-8")
    assert "pass --type v4-8" in error
    assert world.verbs() == ["tpu-vm describe"]  # nothing created, copied or deleted


@pytest.mark.parametrize("flag, deleted", [("--delete", False), ("--delete-reused", True)])
def test_delete_keeps_a_reused_vm(world, flag, deleted):
    world.script(nodes={"fake": {"state": "READY", "type": "v4-8"}})
    proc = world.launch("--type", "v4-8", "--skip-copy", "--skip-install", flag, command=["true"])
    assert proc.returncode == 0, proc.stderr
    assert ("tpu-vm delete" in world.verbs()) == deleted
    assert ("fake" in world.state()["nodes"]) != deleted
    assert ("kept TPU VM fake" in proc.stderr) != deleted


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_interrupt_deletes_the_created_vm(world, sig):
    world.script()
    release = world.dir / "release"
    proc = subprocess.Popen(
        world.argv(
            "--type", "v4-8", "--skip-install", "--delete", command=probe(world.dir, 0, release)
        ),
        env=world.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: (world.job_dir() / "job.run").exists())
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)  # generous: a loaded machine
    finally:
        proc.kill()
    assert proc.returncode == 128 + sig, err
    assert f"interrupted by SIG{sig.name[3:]}" in err
    assert world.verbs()[-2:] == ["tpu-vm scp", "tpu-vm delete"]  # log copied, then deleted
    assert world.state()["nodes"] == {}


def test_interrupt_leaves_the_job_running_and_attach_follows_it(world):
    world.script()
    release = world.dir / "release"
    args = ["--type", "v4-8", "--skip-install"]
    proc = subprocess.Popen(
        world.argv(*args, command=probe(world.dir, 5, release)),
        env=world.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: (world.job_dir() / "job.run").exists())
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)  # generous: a loaded machine
    finally:
        proc.kill()
    assert proc.returncode == 143
    assert "launch/tpu_pod.sh --name fake --zone z --attach" in err
    assert "tpu-vm delete" not in world.verbs()
    pid = int((world.job_dir() / "job.pid").read_text())
    os.killpg(pid, 0)  # still running

    release.touch()
    attach = world.launch("--attach")
    assert attach.returncode == 5, attach.stderr
    assert job_output((world.logs / "worker-0.log").read_text())["args"] == ["it's", "a b", ""]
    assert (world.dir / "starts").read_text() == "x"  # attached, not started again
    assert world.verbs()[-3:] == ["tpu-vm describe", "tpu-vm ssh", "tpu-vm scp"]


def test_hangup_keeps_the_vm_and_stop_stops_the_job(world):
    """A lost terminal (SIGHUP) is not an interrupt: the job and the VM stay, --stop ends it."""
    world.script()
    args = ["--type", "v4-8", "--skip-install", "--delete"]
    proc = subprocess.Popen(
        world.argv(*args, command=probe(world.dir, 0, world.dir / "never")),
        env=world.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: (world.job_dir() / "job.run").exists())
        proc.send_signal(signal.SIGHUP)
        _, err = proc.communicate(timeout=120)  # generous: a loaded machine
    finally:
        proc.kill()
    assert proc.returncode == 129
    assert "kept TPU VM fake: the launcher lost its terminal" in err
    assert "tpu-vm delete" not in world.verbs()
    pid = int((world.job_dir() / "job.pid").read_text())
    os.killpg(pid, 0)  # still running

    stop = world.launch("--stop")
    assert stop.returncode == 0, stop.stderr
    assert "stopping the job" in (world.logs / "ssh.log").read_text()
    with pytest.raises(ProcessLookupError):
        wait_until(lambda: os.killpg(pid, 0) and False, timeout=60)


def test_dropped_ssh_retry_attaches_instead_of_restarting(world):
    world.script(drop_ssh_once=True)
    proc = world.launch("--type", "v4-8", "--skip-install", command=probe(world.dir, 0))
    assert proc.returncode == 0, proc.stderr
    ssh_log = (world.logs / "ssh.log").read_text()
    assert "connection dropped" in ssh_log and "run run-1 already started" in ssh_log
    assert (world.dir / "starts").read_text() == "x"  # the job started once
    assert (world.job_dir() / "worker.log").read_text().count("== run run-1") == 1


def test_queued_resource_waits_until_active_and_retries_failed(world):
    world.script(qr_plans=[["FAILED"], ["WAITING_FOR_RESOURCES", "PROVISIONING", "ACTIVE"]])
    args = ["--type", "v5litepod-8", "--queued", "--poll", "0", "--skip-copy", "--skip-install"]
    proc = world.launch(*args, "--delete", command=["true"])
    assert proc.returncode == 0, proc.stderr
    qr = [c[4:] for c in world.calls() if c[3] == "queued-resources"]
    assert [c[0] for c in qr] == [
        "describe",
        "create",
        "describe",  # FAILED
        "delete",
        "create",
        "describe",
        "describe",
        "describe",  # ACTIVE
        "delete",  # --delete: the queued resource and its VM
    ]
    create = qr[1]
    assert {"--node-id=fake", "--accelerator-type=v5litepod-8"} <= set(create)
    assert "--runtime-version=v2-alpha-tpuv5-lite" in create
    assert "--force" in qr[-1]
    assert world.state()["nodes"] == {}


def test_cleanup_stops_a_leftover_job_before_a_new_run(world):
    world.script(nodes={"fake": {"state": "READY", "type": "v4-8"}})
    # A job from an earlier run, in its own session and no child of this test (as on a
    # worker), that notes the SIGTERM it gets.
    termed = world.dir / "termed"
    leftover = f"trap 'echo TERM > {termed}; exit 0' TERM; sleep 60 & wait"
    pid = subprocess.run(
        ["bash", "-c", 'setsid bash -c "$0" >/dev/null 2>&1 </dev/null & echo $!', leftover],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    world.job_dir().mkdir(parents=True)
    (world.job_dir() / "job.pid").write_text(pid)
    args = ["--type", "v4-8", "--skip-copy", "--skip-install", "--run-id", "run-2"]
    proc = world.launch(*args, command=["true"])
    assert proc.returncode == 0, proc.stderr
    assert termed.read_text() == "TERM\n"
    assert "stopping the job" in (world.logs / "ssh.log").read_text()
    with pytest.raises(ProcessLookupError):
        os.killpg(int(pid), 0)
