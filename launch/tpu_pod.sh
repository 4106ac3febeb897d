#!/usr/bin/env bash
# Runs one spar_jax command on every worker of a Cloud TPU VM (one host or a
# pod slice) with gcloud. `launch/tpu_pod.sh --help` lists the flags;
# docs/launch.md has examples.
set -euo pipefail
SPAR_PROG=launch/tpu_pod.sh
# shellcheck source=launch/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
# shellcheck source=launch/tpu_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/tpu_lib.sh"

usage() {
  cat <<'EOF_USAGE'
usage: launch/tpu_pod.sh --name NAME --zone ZONE --type TYPE [flags] -- COMMAND [ARG...]
       launch/tpu_pod.sh --name NAME --zone ZONE --attach|--stop [flags]

Creates the Cloud TPU VM NAME, or reuses it when it is READY and of type TYPE
(a PREEMPTED or TERMINATED VM is deleted and created again); copies this
checkout (the files git would commit) to every worker, or clones --git there;
installs requirements.txt and jax[tpu] into a virtualenv on every worker;
then starts COMMAND on all workers at once, detached from the SSH session,
with SPAR_DISTRIBUTED=auto (JAX finds the other hosts itself). The launcher
follows the workers' logs until the job ends, copies them to
LOG_DIR/worker-<i>.log and exits with the job's status. A dropped connection
or Ctrl-C leaves the job running (unless --delete deletes the VM): --attach
follows it again, --stop stops it. COMMAND runs in the project directory with
the virtualenv active.

required:
  --name NAME         TPU VM name: lowercase letters, digits and hyphens
  --zone ZONE         zone, e.g. us-east5-a (v5p), us-central2-b (v4)
  --type TYPE         accelerator type as the API names it: v4-8, v5p-16,
                      v5litepod-16 (v5e), v6e-8 (optional with --attach)

TPU VM:
  --version RUNTIME   TPU software version; default by type: v5p v2-alpha-tpuv5,
                      v5litepod v2-alpha-tpuv5-lite, v6e v2-alpha-tpuv6e,
                      v2/v3/v4 tpu-ubuntu2204-base
  --project PROJECT   GCP project (default: gcloud's configured project)
  --spot              create a Spot VM (cheaper; may be preempted)
  --reserved          create the VM in reserved capacity
  --queued            create it through a queued resource and wait until it is
                      ACTIVE (the way Cloud TPU recommends for Spot capacity)
  --queued-retries N  ask again this many times when the queued resource
                      ends FAILED or SUSPENDED (default: 3)
  --poll SECONDS      how often to check a queued resource (default: 60)
  --create-arg ARG    extra argument for `tpu-vm create` or
                      `queued-resources create`, repeatable, e.g. --create-arg=--network=my-net
  --workers N         number of hosts in the slice (default: from --type;
                      needed for a type this script does not know)
  --delete            delete the VM at the end (after copying the logs), also
                      when COMMAND failed or the launcher got Ctrl-C or SIGTERM
                      (not SIGHUP, a lost terminal), but only when this run created it
  --delete-reused     like --delete, also when the VM already existed

code and packages on the workers:
  --git URL           git clone URL on every worker instead of copying this checkout
  --git-ref REF       branch, tag or commit to check out with --git (default: the remote's HEAD)
  --remote-dir DIR    project directory on the workers, relative to the home directory
                      (default: spar_jax)
  --python PYTHON     interpreter for the workers' virtualenv, Python >= 3.11
                      (default: python3.11; apt-installed with its -venv package if missing)
  --skip-copy         do not copy or clone the code (it is already on the workers)
  --skip-install      do not install packages (the virtualenv is already set up)
  --env KEY=VALUE     extra environment variable for COMMAND, repeatable

gcloud:
  --ssh-arg ARG       extra argument for every `tpu-vm ssh`, repeatable, e.g. --ssh-arg=--internal-ip
  --scp-arg ARG       extra argument for every `tpu-vm scp`, repeatable, e.g. --scp-arg=--internal-ip

run:
  --attach            start nothing: follow the job already running on NAME,
                      copy its logs and exit with its status
  --stop              start nothing: stop the job running on NAME (its process
                      group on every worker) and copy its logs
  --run-id ID         names this run on the workers, so that a repeated start
                      command attaches instead of starting again
                      (default: NAME-<UTC date and time>-<pid>)
  --log-dir DIR       local directory for setup.log, ssh.log and worker-<i>.log
                      (default: logs/NAME)
  --dry-run           print the commands, one per line, instead of running them
                      (the plan for a VM that does not exist yet)
  -h, --help          show this help

example:
  launch/tpu_pod.sh --name spar --zone us-east5-a --type v5p-8 --spot -- \
    python -m spar_jax spar --config configs/spar_llama3_8b.py --config.mesh='(1,-1,1)'
  launch/tpu_pod.sh --name spar --zone us-east5-a --attach     # after a dropped session
EOF_USAGE
}

NAME='' ZONE='' TYPE='' VERSION='' PROJECT='' WORKERS='' GIT_URL='' GIT_REF='' RUN_ID=''
REMOTE_DIR=spar_jax PYTHON=python3.11 LOG_DIR='' QUEUED_RETRIES=3 POLL_S=60
SPOT=0 RESERVED=0 QUEUED=0 DELETE=0 DELETE_REUSED=0 SKIP_COPY=0 SKIP_INSTALL=0 ATTACH=0 STOP=0
EXTRA_ENV=() SSH_ARGS=() SCP_ARGS=() CREATE_ARGS=() SPAR_CMD=()

spar_split_args "$@"
set -- ${SPAR_ARGS[@]+"${SPAR_ARGS[@]}"}
while (($#)); do
  case $1 in
    -h | --help) usage && exit 0 ;;
    --dry-run) SPAR_DRY_RUN=1 ;;
    --name) spar_takes_value "$@" && NAME=$2 && shift ;;
    --zone) spar_takes_value "$@" && ZONE=$2 && shift ;;
    --type) spar_takes_value "$@" && TYPE=$2 && shift ;;
    --version) spar_takes_value "$@" && VERSION=$2 && shift ;;
    --project) spar_takes_value "$@" && PROJECT=$2 && shift ;;
    --spot) SPOT=1 ;;
    --reserved) RESERVED=1 ;;
    --queued) QUEUED=1 ;;
    --queued-retries) spar_takes_value "$@" && QUEUED_RETRIES=$2 && shift ;;
    --poll) spar_takes_value "$@" && POLL_S=$2 && shift ;;
    --create-arg) spar_takes_any_value "$@" && CREATE_ARGS+=("$2") && shift ;;
    --ssh-arg) spar_takes_any_value "$@" && SSH_ARGS+=("$2") && shift ;;
    --scp-arg) spar_takes_any_value "$@" && SCP_ARGS+=("$2") && shift ;;
    --workers) spar_takes_value "$@" && WORKERS=$2 && shift ;;
    --delete) DELETE=1 ;;
    --delete-reused) DELETE=1 && DELETE_REUSED=1 ;;
    --git) spar_takes_value "$@" && GIT_URL=$2 && shift ;;
    --git-ref) spar_takes_value "$@" && GIT_REF=$2 && shift ;;
    --remote-dir) spar_takes_value "$@" && REMOTE_DIR=$2 && shift ;;
    --python) spar_takes_value "$@" && PYTHON=$2 && shift ;;
    --skip-copy) SKIP_COPY=1 ;;
    --skip-install) SKIP_INSTALL=1 ;;
    --env) spar_takes_value "$@" && spar_check_env_kv --env "$2" && EXTRA_ENV+=("$2") && shift ;;
    --attach) ATTACH=1 ;;
    --stop) ATTACH=1 && STOP=1 ;;
    --run-id) spar_takes_value "$@" && RUN_ID=$2 && shift ;;
    --log-dir) spar_takes_value "$@" && LOG_DIR=$2 && shift ;;
    --) shift && SPAR_CMD=("$@") && break ;;
    -*) spar_usage_error "unknown flag $1" ;;
    *) spar_usage_error "unexpected argument '$1': put the command after --, e.g. -- python -m spar_jax ..." ;;
  esac
  shift
done

[[ -n $NAME ]] || spar_usage_error "missing --name: name the TPU VM, e.g. --name spar-v5p"
name_re='^[a-z]([-a-z0-9]*[a-z0-9])?$'
[[ $NAME =~ $name_re ]] || spar_usage_error "--name '$NAME': use lowercase letters, digits and hyphens, starting with a letter"
[[ -n $ZONE ]] || spar_usage_error "missing --zone: give the TPU zone, e.g. --zone us-east5-a"
((ATTACH)) || [[ -n $TYPE ]] || spar_usage_error "missing --type: give the accelerator type, e.g. --type v5p-8"
[[ -z $TYPE ]] || tpu_check_type "$TYPE"
[[ -z $WORKERS ]] || spar_check_positive_int --workers "$WORKERS"
if [[ -z $WORKERS && -n $TYPE ]]; then
  WORKERS=$(tpu_hosts "$TYPE") || spar_usage_error "--type $TYPE: unknown number of hosts; pass --workers N"
fi
if [[ -z $VERSION && -n $TYPE ]] && ! ((ATTACH)); then
  VERSION=$(tpu_runtime "$TYPE") || spar_usage_error "--type $TYPE: no default runtime; pass --version RUNTIME"
fi
[[ $POLL_S =~ ^[0-9]+$ ]] || spar_usage_error "--poll '$POLL_S': expected whole seconds, e.g. --poll 60"
[[ $QUEUED_RETRIES =~ ^[0-9]+$ ]] || spar_usage_error "--queued-retries '$QUEUED_RETRIES': expected a whole number"
((SPOT && RESERVED)) && spar_usage_error "--spot and --reserved exclude each other; pass one of them"
[[ -z $GIT_REF || -n $GIT_URL ]] || spar_usage_error "--git-ref needs --git URL"
if ((ATTACH)); then
  flag=--attach
  ((STOP)) && flag=--stop
  ((${#SPAR_CMD[@]} == 0)) || spar_usage_error "$flag starts no command; drop $flag or the command after --"
  [[ -n $WORKERS ]] || ! ((SPAR_DRY_RUN)) || spar_usage_error "--dry-run $flag needs --type or --workers"
else
  spar_need_command "python -m spar_jax spar --config configs/spar_llama3_8b.py"
fi
RUN_ID=${RUN_ID:-$NAME-$(date -u +%Y%m%d-%H%M%S)-$$}
id_re='^[A-Za-z0-9][A-Za-z0-9._-]*$'
[[ $RUN_ID =~ $id_re ]] || spar_usage_error "--run-id '$RUN_ID': use letters, digits, '.', '_' and '-'"
LOG_DIR=${LOG_DIR:-logs/$NAME}

if ! ((SPAR_DRY_RUN)); then
  command -v gcloud >/dev/null ||
    spar_die "gcloud not found: install the Google Cloud CLI (https://cloud.google.com/sdk/docs/install) and run gcloud auth login"
fi

# Flags every gcloud call takes.
where=(--zone="$ZONE")
[[ -z $PROJECT ]] || where+=(--project="$PROJECT")
tpu=(gcloud compute tpus tpu-vm)
qr=(gcloud compute tpus queued-resources)
ssh_all=("${tpu[@]}" ssh "$NAME" "${where[@]}" --worker=all ${SSH_ARGS[@]+"${SSH_ARGS[@]}"} --command)
scp=("${tpu[@]}" scp "${where[@]}" ${SCP_ARGS[@]+"${SCP_ARGS[@]}"})
create_vm=("${tpu[@]}" create "$NAME" "${where[@]}" --accelerator-type="$TYPE" --version="$VERSION")
create_qr=("${qr[@]}" create "$NAME" "${where[@]}" --node-id="$NAME" --accelerator-type="$TYPE" --runtime-version="$VERSION")
((SPOT)) && create_vm+=(--spot) && create_qr+=(--spot)
((RESERVED)) && create_vm+=(--reserved) && create_qr+=(--reserved)
create_vm+=(${CREATE_ARGS[@]+"${CREATE_ARGS[@]}"})
create_qr+=(${CREATE_ARGS[@]+"${CREATE_ARGS[@]}"})
tpu_describe_commands

# Remote commands are strings for the workers' login shell (bash): every
# word in them from the user is quoted by spar_join.
rdir=$(spar_join "$REMOTE_DIR")
logd=logs/$NAME
tmp=${TMPDIR:-/tmp}
tmp=${tmp%/}
tarball=$tmp/spar_jax-$RUN_ID.tar.gz
filelist=$tmp/spar_jax-$RUN_ID.files
remote_tarball=spar_jax-src-$RUN_ID.tar.gz
CREATED=0 STARTED=0 FINISHED=0 HUNG_UP=0 follower=''
VM_STATE='' VM_TYPE='' QR_STATE=''

# The end of every run, normal or not: copy the logs of a started job, then
# delete the VM as --delete promised, and say how to reach a job left running.
# finish STATUS REPORT: REPORT=1 (the normal end) also names a failed status.
finish() {
  local rc=$1 report=$2 i
  ((FINISHED)) && return 0
  FINISHED=1
  trap '' INT TERM HUP
  [[ -z $follower ]] || kill -TERM -- "-$follower" 2>/dev/null || true
  ((SPAR_DRY_RUN)) || rm -f "$tarball" "$filelist"
  if ((STARTED)); then
    for ((i = 0; i < WORKERS; i++)); do
      spar_run "${scp[@]}" "$NAME:${REMOTE_DIR%/}/$logd/worker.log" "$LOG_DIR/worker-$i.log" --worker="$i" ||
        spar_note "could not copy worker $i's log"
    done
  fi
  if ((HUNG_UP)); then
    spar_note "kept TPU VM $NAME: the launcher lost its terminal; the job keeps running (--attach follows it)"
  elif ((DELETE && (CREATED || DELETE_REUSED))); then
    if ! tpu_delete; then
      tpu_read_vm # a create that failed leaves nothing to delete
      if [[ -n $VM_STATE ]]; then
        spar_note "could not delete TPU VM $NAME ($VM_STATE): delete it yourself, it is billed while it exists"
        ((rc)) || rc=1
      fi
    fi
  elif ((DELETE)); then
    spar_note "kept TPU VM $NAME: this run did not create it (--delete-reused deletes it too)"
  elif ((STARTED && rc)); then
    local again=("$SPAR_PROG" --name "$NAME" --zone "$ZONE")
    [[ -z $PROJECT ]] || again+=(--project "$PROJECT")
    [[ $REMOTE_DIR == spar_jax ]] || again+=(--remote-dir "$REMOTE_DIR")
    spar_note "if the job still runs, follow it with: $(spar_join "${again[@]}") --attach (--stop stops it)"
  fi
  ((rc == 0 || !report)) || spar_note "failed with status $rc; logs in $LOG_DIR"
  return "$rc"
}
# shellcheck disable=SC2329 # invoked by the traps below
on_exit() {
  local rc=$?
  finish "$rc" 0 || rc=$?
  exit "$rc"
}
# shellcheck disable=SC2329
on_signal() {
  spar_note "interrupted by SIG$1"
  [[ $1 != HUP ]] || HUNG_UP=1
  exit "$2"
}
trap on_exit EXIT
trap 'on_signal INT 130' INT
trap 'on_signal TERM 143' TERM
trap 'on_signal HUP 129' HUP

spar_show "$(spar_join cd "$SPAR_ROOT")"
cd "$SPAR_ROOT"
spar_run mkdir -p "$LOG_DIR"
setup_log=$LOG_DIR/setup.log

# 1. The VM.
if ((ATTACH)); then
  tpu_read_vm
  if ! ((SPAR_DRY_RUN)); then
    [[ $VM_STATE == READY ]] || spar_die "TPU VM $NAME is ${VM_STATE:-missing}, not READY: there is no job to attach to"
    if [[ -n $TYPE ]]; then
      tpu_check_vm_type
    else
      TYPE=$VM_TYPE
      [[ -n $WORKERS ]] || WORKERS=$(tpu_hosts "$TYPE") || spar_die "TPU VM $NAME is a '$TYPE': pass --workers N"
    fi
  fi
else
  tpu_ensure_vm
fi

status=0
# 2. The code on every worker: the files git would commit (tracked, and
# untracked but not ignored), without virtualenvs that .gitignore misses.
if ! ((ATTACH || SKIP_COPY)); then
  if [[ -n $GIT_URL ]]; then
    git_script="{ [ -d $rdir/.git ] || git clone --quiet $(spar_join "$GIT_URL" "$REMOTE_DIR"); }"
    git_script+=" && git -C $rdir fetch --quiet origin $(spar_join "${GIT_REF:-HEAD}")"
    git_script+=" && git -C $rdir checkout --quiet --force --detach FETCH_HEAD"
    spar_run_logged "$setup_log" "${ssh_all[@]}" "$git_script" || status=$?
  else
    list_files=(git ls-files -z --cached --others --exclude-standard)
    for cfg in ./*/pyvenv.cfg ./.*/pyvenv.cfg; do
      [[ -f $cfg ]] || continue
      cfg=${cfg#./}
      list_files+=("--exclude=/${cfg%/pyvenv.cfg}/")
    done
    if ! ((SPAR_DRY_RUN)); then
      git rev-parse --is-inside-work-tree >/dev/null 2>&1 ||
        spar_die "$SPAR_ROOT is not a git checkout: pass --git URL, or --skip-copy when the code is on the workers"
      [[ -z $(git ls-files --deleted) ]] ||
        spar_die "tracked files are missing from the working tree ($(git ls-files --deleted | head -n 3 | tr '\n' ' ')): commit their deletion (git rm) or restore them (git checkout -- FILE)"
      [[ ! -e $tarball ]] || spar_die "$tarball exists: pass another --run-id"
    fi
    spar_show "$(spar_join "${list_files[@]}") > $(spar_join "$filelist")"
    ((SPAR_DRY_RUN)) || "${list_files[@]}" >"$filelist" || status=$?
    # COPYFILE_DISABLE keeps macOS tar from adding ._* files.
    ((status)) || spar_run_logged "$setup_log" env COPYFILE_DISABLE=1 tar -czf "$tarball" --no-recursion --null -T "$filelist" || status=$?
    ((status)) || spar_run_logged "$setup_log" "${scp[@]}" "$tarball" "$NAME:$remote_tarball" --worker=all || status=$?
    ((status)) || spar_run rm -f "$tarball" "$filelist" || status=$?
    ((status)) || spar_run_logged "$setup_log" "${ssh_all[@]}" "mkdir -p $rdir && tar -xzf $remote_tarball -C $rdir && rm -f $remote_tarball" || status=$?
  fi
fi

# 3. A virtualenv with the pinned requirements and jax[tpu] on every worker.
if ! ((ATTACH || SKIP_INSTALL || status)); then
  py=$(spar_join "$PYTHON")
  pkg=$(spar_join "${PYTHON##*/}")
  install="if ! $py -c \"import ensurepip\" >/dev/null 2>&1; then sudo apt-get update -qq"
  install+=" && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $pkg $pkg-venv; fi"
  install+=" && cd $rdir && $py -m venv .venv && .venv/bin/pip install -q --upgrade pip"
  install+=" && .venv/bin/pip install -q -r requirements.txt $(spar_join "$(spar_jax_requirement tpu)")"
  install+=" && .venv/bin/pip install -q --no-deps -e ."
  spar_run_logged "$setup_log" "${ssh_all[@]}" "$install" || status=$?
fi

# 4. COMMAND on all workers, detached, then its output until it ends. The
# start is idempotent (gcloud repeats --command on a worker whose ssh exits
# 255): a second start of the same run id attaches. ssh.log holds the live
# output of all workers, interleaved.
if ! ((status)); then
  run="cd $rdir && mkdir -p $logd && "
  if ((STOP)); then
    run+=$(tpu_stop_script "$logd")
  elif ((ATTACH)); then
    run+=$(tpu_follow_script "$logd")
  else
    job=(env SPAR_DISTRIBUTED=auto PYTHONUNBUFFERED=1 ${EXTRA_ENV[@]+"${EXTRA_ENV[@]}"} "${SPAR_CMD[@]}")
    run+="{ $(tpu_start_script "$logd" "$RUN_ID" "${job[@]}"); } && { $(tpu_follow_script "$logd"); }"
  fi
  STARTED=1
  if ((SPAR_DRY_RUN)); then
    spar_run_logged "$LOG_DIR/ssh.log" "${ssh_all[@]}" "$run"
  else
    # In the background and in its own process group (set -m), so that a
    # signal reaches the trap at once and the trap can stop gcloud and ssh.
    set -m
    spar_run_logged "$LOG_DIR/ssh.log" "${ssh_all[@]}" "$run" &
    follower=$!
    set +m
    wait "$follower" || status=$?
    follower=''
  fi
fi

# 5. Logs back, and the VM deleted as --delete asks.
finish "$status" 1 || status=$?
exit "$status"
