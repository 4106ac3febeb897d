"""A fake `gcloud` for tests/test_launch_tpu.py: records every call and plays a scripted world.

Run as `python fake_gcloud.py ARGS...` by a `gcloud` wrapper on PATH. The world lives in the
directory $FAKE_GCLOUD_DIR:

* world.json: {"nodes": {name: {"state": ..., "type": ...}},
               "qrs": {name: [state, ...]},        # states the next describes return
               "qr_plans": [[state, ...], ...],    # states of each queued resource created
               "drop_ssh_once": bool,              # drop the first job ssh, then retry it
               "fail_create": bool}                # every tpu-vm create fails
* calls.jsonl: one JSON list of arguments per call, in order.
* home/: the home directory of every worker (one directory acts for all of them).
* uploads/: a copy of every file copied to the workers.

`ssh --command` runs the command with bash in home/ (a detached job survives the call, as on a
real worker); `scp` copies between home/ and this machine; deleting a VM kills the job
recorded in any home/**/job.pid, as losing the VM would.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

DIR = Path(os.environ["FAKE_GCLOUD_DIR"])
HOME = DIR / "home"


def load() -> dict:
    path = DIR / "world.json"
    world = json.loads(path.read_text()) if path.exists() else {}
    for key in ("nodes", "qrs"):
        world.setdefault(key, {})
    world.setdefault("qr_plans", [])
    return world


def save(world: dict) -> None:
    (DIR / "world.json").write_text(json.dumps(world))


def flag(args: list[str], name: str) -> str | None:
    for a in args:
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def positional(args: list[str]) -> list[str]:
    return [a for a in args if not a.startswith("--")]


def kill_jobs(name: str) -> None:
    for pid_file in HOME.glob(f"**/logs/{name}/job.pid"):
        try:
            os.killpg(int(pid_file.read_text()), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def tpu_vm(verb: str, args: list[str], world: dict) -> int:
    nodes = world["nodes"]
    if verb == "describe":
        node = nodes.get(args[0])
        if node is None:
            print(f"ERROR: NOT_FOUND: node {args[0]}", file=sys.stderr)
            return 1
        print(f"{node['state']}\t{node['type']}")
        return 0
    if verb == "create":
        if world.get("fail_create"):
            print("ERROR: RESOURCE_EXHAUSTED: no capacity in the zone", file=sys.stderr)
            return 1
        if args[0] in nodes:
            print(f"ERROR: ALREADY_EXISTS: node {args[0]}", file=sys.stderr)
            return 1
        nodes[args[0]] = {"state": "READY", "type": flag(args, "--accelerator-type")}
        return 0
    if verb == "delete":
        if nodes.pop(args[0], None) is None:
            return 1
        kill_jobs(args[0])
        return 0
    if verb == "scp":
        src, dst = positional(args)
        if ":" in dst:
            shutil.copy(src, HOME / dst.split(":", 1)[1])
            (DIR / "uploads").mkdir(exist_ok=True)
            shutil.copy(src, DIR / "uploads" / Path(src).name)  # kept for the tests to open
        else:
            shutil.copy(HOME / src.split(":", 1)[1], dst)
        print(f"[fake scp] {src} -> {dst}")
        return 0
    if verb == "ssh":
        return ssh(args[args.index("--command") + 1], world)
    raise SystemExit(f"fake gcloud: tpu-vm {verb} not scripted")


def ssh(script: str, world: dict) -> int:
    env = dict(os.environ, HOME=str(HOME))
    if world.get("drop_ssh_once") and "job.run" in script:
        world["drop_ssh_once"] = False
        save(world)
        # The connection drops once the job has started; gcloud then runs --command again.
        proc = subprocess.Popen(["bash", "-c", script], cwd=HOME, env=env, start_new_session=True)
        deadline = time.time() + 30
        while not list(HOME.glob("**/job.run")) and time.time() < deadline:
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        print("[fake ssh] connection dropped (255); retrying", file=sys.stderr)
    status = subprocess.run(["bash", "-c", script], cwd=HOME, env=env).returncode
    print(f"[fake ssh] exit {status}")
    return status


def queued_resources(verb: str, args: list[str], world: dict) -> int:
    name = args[0]
    if verb == "describe":
        states = world["qrs"].get(name)
        if not states:
            print(f"ERROR: NOT_FOUND: queued resource {name}", file=sys.stderr)
            return 1
        state = states.pop(0) if len(states) > 1 else states[0]
        if state == "ACTIVE":
            world["nodes"].setdefault(
                name, {"state": "READY", "type": world.get(f"qr_type:{name}")}
            )
        print(state)
        return 0
    if verb == "create":
        if name in world["qrs"]:
            return 1
        world["qrs"][name] = world["qr_plans"].pop(0) if world["qr_plans"] else ["ACTIVE"]
        world[f"qr_type:{name}"] = flag(args, "--accelerator-type")
        return 0
    if verb == "delete":
        world["qrs"].pop(name, None)
        world["nodes"].pop(name, None)
        kill_jobs(name)
        return 0
    raise SystemExit(f"fake gcloud: queued-resources {verb} not scripted")


def main() -> int:
    args = sys.argv[1:]
    with open(DIR / "calls.jsonl", "a") as f:
        f.write(json.dumps(args) + "\n")
    assert args[:2] == ["compute", "tpus"], args
    world = load()
    group, verb, rest = args[2], args[3], args[4:]
    if group == "tpu-vm":
        status = tpu_vm(verb, rest, world)
    else:
        status = queued_resources(verb, rest, world)
    if not (group == "tpu-vm" and verb == "ssh"):  # ssh saved its own changes
        save(world)
    return status


if __name__ == "__main__":
    sys.exit(main())
