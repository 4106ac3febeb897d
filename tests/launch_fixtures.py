"""Shared by the launcher tests: paths, awkward arguments, and readers of printed plans.

A `--dry-run` plan is one command per line; `commands` parses a line back into its simple
commands with shlex, the way bash would read it.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

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
