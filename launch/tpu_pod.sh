#!/usr/bin/env bash
# Runs one spar_jax command on every worker of a Cloud TPU VM (one host or a
# pod slice) with gcloud. `launch/tpu_pod.sh --help` lists the flags;
# docs/launch.md has examples.
set -euo pipefail
SPAR_PROG=launch/tpu_pod.sh
# shellcheck source=launch/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<'EOF'
usage: launch/tpu_pod.sh --name NAME --zone ZONE --type TYPE [flags] -- COMMAND [ARG...]

Creates the Cloud TPU VM NAME (or reuses it when it exists), copies this
checkout to every worker (or clones --git there), installs requirements.txt
and jax[tpu] into a virtualenv on every worker, runs COMMAND on all workers at
once with SPAR_DISTRIBUTED=auto (JAX finds the other hosts itself), copies
each worker's output to LOG_DIR/worker-<i>.log and, with --delete, deletes
the VM. COMMAND runs in the project directory with the virtualenv active.

required:
  --name NAME         TPU VM name: lowercase letters, digits and hyphens
  --zone ZONE         zone, e.g. us-east5-a (v5p), us-central2-b (v4)
  --type TYPE         accelerator type, e.g. v5p-8, v4-32, v5litepod-16, v6e-8

TPU VM:
  --version RUNTIME   TPU software version; default by type: v5p v2-alpha-tpuv5,
                      v5litepod v2-alpha-tpuv5-lite, v6e v2-alpha-tpuv6e,
                      v2/v3/v4 tpu-ubuntu2204-base
  --project PROJECT   GCP project (default: gcloud's configured project)
  --spot              create a Spot VM (cheaper; may be preempted)
  --reserved          create the VM in reserved capacity
  --create-arg ARG    extra argument for `tpu-vm create`, repeatable,
                      e.g. --create-arg=--network=my-net
  --ssh-arg ARG       extra argument for every `tpu-vm ssh` and `scp`, repeatable,
                      e.g. --ssh-arg=--internal-ip or --ssh-arg=--tunnel-through-iap
  --workers N         number of hosts in the slice (default: from --type;
                      needed for a type this script does not know)
  --delete            delete the VM at the end, after the logs are copied,
                      also when COMMAND failed

code and packages on the workers:
  --git URL           git clone URL on every worker instead of copying this checkout
                      (tracked and untracked files, without .git, .venv, logs, runs, out, build)
  --git-ref REF       branch, tag or commit to check out with --git (default: the remote's HEAD)
  --remote-dir DIR    project directory on the workers, relative to the home directory
                      (default: spar_jax)
  --python PYTHON     interpreter for the workers' virtualenv, Python >= 3.11
                      (default: python3.11; apt-installed with its -venv package if missing)
  --skip-copy         do not copy or clone the code (it is already on the workers)
  --skip-install      do not install packages (the virtualenv is already set up)
  --env KEY=VALUE     extra environment variable for COMMAND, repeatable

run:
  --log-dir DIR       local directory for worker-<i>.log and ssh.log (default: logs/NAME)
  --dry-run           print the commands, one per line, instead of running them
  -h, --help          show this help

example:
  launch/tpu_pod.sh --name spar --zone us-east5-a --type v5p-8 --spot -- \
    python -m spar_jax spar --config configs/spar_llama3_8b.py --config.mesh='(1,-1,1)'
EOF
}

# Hosts in a slice: v2/v3/v4/v5p count TensorCores (8 per host); v5e/v6e
# count chips (up to 8 on one host, 4 per host in larger slices).
tpu_hosts() {
  local type=$1 n=${1##*-} re='^[1-9][0-9]*$'
  [[ $n =~ $re ]] || return 1
  case $type in
    v2-* | v3-* | v4-* | v5p-*) echo $(((n + 7) / 8)) ;;
    v5litepod-* | v5e-* | v6e-*) if ((n <= 8)); then echo 1; else echo $((n / 4)); fi ;;
    *) return 1 ;;
  esac
}

tpu_runtime() {
  case $1 in
    v5p-*) echo v2-alpha-tpuv5 ;;
    v5litepod-* | v5e-*) echo v2-alpha-tpuv5-lite ;;
    v6e-*) echo v2-alpha-tpuv6e ;;
    v2-* | v3-* | v4-*) echo tpu-ubuntu2204-base ;;
    *) return 1 ;;
  esac
}

NAME='' ZONE='' TYPE='' VERSION='' PROJECT='' WORKERS='' GIT_URL='' GIT_REF=''
REMOTE_DIR=spar_jax PYTHON=python3.11 LOG_DIR=''
SPOT=0 RESERVED=0 DELETE=0 SKIP_COPY=0 SKIP_INSTALL=0
EXTRA_ENV=() SSH_ARGS=() CREATE_ARGS=() SPAR_CMD=()

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
    --create-arg) spar_takes_any_value "$@" && CREATE_ARGS+=("$2") && shift ;;
    --ssh-arg) spar_takes_any_value "$@" && SSH_ARGS+=("$2") && shift ;;
    --workers) spar_takes_value "$@" && WORKERS=$2 && shift ;;
    --delete) DELETE=1 ;;
    --git) spar_takes_value "$@" && GIT_URL=$2 && shift ;;
    --git-ref) spar_takes_value "$@" && GIT_REF=$2 && shift ;;
    --remote-dir) spar_takes_value "$@" && REMOTE_DIR=$2 && shift ;;
    --python) spar_takes_value "$@" && PYTHON=$2 && shift ;;
    --skip-copy) SKIP_COPY=1 ;;
    --skip-install) SKIP_INSTALL=1 ;;
    --env) spar_takes_value "$@" && spar_check_env_kv --env "$2" && EXTRA_ENV+=("$2") && shift ;;
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
[[ -n $TYPE ]] || spar_usage_error "missing --type: give the accelerator type, e.g. --type v5p-8"
if [[ -n $WORKERS ]]; then
  spar_check_positive_int --workers "$WORKERS"
else
  WORKERS=$(tpu_hosts "$TYPE") || spar_usage_error "--type $TYPE: unknown number of hosts; pass --workers N"
fi
if [[ -z $VERSION ]]; then
  VERSION=$(tpu_runtime "$TYPE") || spar_usage_error "--type $TYPE: no default runtime; pass --version RUNTIME"
fi
((SPOT && RESERVED)) && spar_usage_error "--spot and --reserved exclude each other; pass one of them"
[[ -z $GIT_REF || -n $GIT_URL ]] || spar_usage_error "--git-ref needs --git URL"
spar_need_command "python -m spar_jax spar --config configs/spar_llama3_8b.py"
LOG_DIR=${LOG_DIR:-logs/$NAME}

if ! ((SPAR_DRY_RUN)); then
  command -v gcloud >/dev/null ||
    spar_die "gcloud not found: install the Google Cloud CLI (https://cloud.google.com/sdk/docs/install) and run gcloud auth login"
fi

spar_show "$(spar_join cd "$SPAR_ROOT")"
cd "$SPAR_ROOT"

# Flags every gcloud tpu-vm call takes.
where=(--zone="$ZONE")
[[ -z $PROJECT ]] || where+=(--project="$PROJECT")
tpu=(gcloud compute tpus tpu-vm)
ssh_all=("${tpu[@]}" ssh "$NAME" "${where[@]}" --worker=all ${SSH_ARGS[@]+"${SSH_ARGS[@]}"} --command)
scp=("${tpu[@]}" scp "${where[@]}" ${SSH_ARGS[@]+"${SSH_ARGS[@]}"})

# 1. The VM: reuse it if it exists, else create it.
describe=("${tpu[@]}" describe "$NAME" "${where[@]}")
create=("${tpu[@]}" create "$NAME" "${where[@]}" --accelerator-type="$TYPE" --version="$VERSION")
((SPOT)) && create+=(--spot)
((RESERVED)) && create+=(--reserved)
create+=(${CREATE_ARGS[@]+"${CREATE_ARGS[@]}"})
spar_show "$(spar_join "${describe[@]}") >/dev/null 2>&1 || $(spar_join "${create[@]}")"
if ! ((SPAR_DRY_RUN)); then
  if "${describe[@]}" >/dev/null 2>&1; then
    spar_note "TPU VM $NAME exists in $ZONE; reusing it"
  else
    "${create[@]}"
  fi
fi

# Remote commands are strings for the workers' login shell (bash): every
# word in them is quoted by spar_join, so paths and prompts stay data.
rdir=$(spar_join "$REMOTE_DIR")
status=0

# 2. The code on every worker.
if ! ((SKIP_COPY)); then
  if [[ -n $GIT_URL ]]; then
    git_script="{ [ -d $rdir/.git ] || git clone --quiet $(spar_join "$GIT_URL" "$REMOTE_DIR"); }"
    git_script+=" && git -C $rdir fetch --quiet origin $(spar_join "${GIT_REF:-HEAD}")"
    git_script+=" && git -C $rdir checkout --quiet --force --detach FETCH_HEAD"
    spar_run "${ssh_all[@]}" "$git_script" || status=$?
  else
    tarball=${TMPDIR:-/tmp}/spar_jax-$NAME.tar.gz
    remote_tarball=spar_jax-src-$NAME.tar.gz
    # COPYFILE_DISABLE keeps macOS tar from adding ._* files.
    spar_run env COPYFILE_DISABLE=1 tar -czf "$tarball" \
      --exclude=.git --exclude=__pycache__ --exclude='*.egg-info' --exclude=.pytest_cache \
      --exclude=.ruff_cache --exclude=./.venv --exclude=./logs --exclude=./runs \
      --exclude=./out --exclude=./build -C "$SPAR_ROOT" . || status=$?
    ((status)) || spar_run "${scp[@]}" "$tarball" "$NAME:$remote_tarball" --worker=all || status=$?
    ((status)) || spar_run "${ssh_all[@]}" "mkdir -p $rdir && tar -xzf $remote_tarball -C $rdir && rm -f $remote_tarball" || status=$?
  fi
fi

# 3. A virtualenv with the pinned requirements and jax[tpu] on every worker.
if ! ((SKIP_INSTALL || status)); then
  py=$(spar_join "$PYTHON")
  pkg=$(spar_join "${PYTHON##*/}")
  install="if ! $py -c \"import ensurepip\" >/dev/null 2>&1; then sudo apt-get update -qq"
  install+=" && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $pkg $pkg-venv; fi"
  install+=" && cd $rdir && $py -m venv .venv && .venv/bin/pip install -q --upgrade pip"
  install+=" && .venv/bin/pip install -q -r requirements.txt $(spar_join "$(spar_jax_requirement tpu)")"
  install+=" && .venv/bin/pip install -q --no-deps -e ."
  spar_run "${ssh_all[@]}" "$install" || status=$?
fi

# 4. COMMAND on all workers at once; each worker tees its output to a file
# that step 5 copies back. The local ssh.log has all workers interleaved.
remote_log=logs/$NAME/worker.log
ran=0
if ! ((status)); then
  ran=1
  run="cd $rdir && mkdir -p $(spar_join "logs/$NAME") && . .venv/bin/activate && set -o pipefail"
  run+=" && $(spar_join env SPAR_DISTRIBUTED=auto PYTHONUNBUFFERED=1 ${EXTRA_ENV[@]+"${EXTRA_ENV[@]}"} "${SPAR_CMD[@]}")"
  run+=" 2>&1 | tee $(spar_join "$remote_log")"
  spar_run mkdir -p "$LOG_DIR"
  spar_run_logged "$LOG_DIR/ssh.log" "${ssh_all[@]}" "$run" || status=$?
fi

# 5. Each worker's log to LOG_DIR/worker-<i>.log (a failed copy is reported, not fatal).
if ((ran)); then
  remote_path=${REMOTE_DIR%/}/$remote_log
  for ((i = 0; i < WORKERS; i++)); do
    spar_run "${scp[@]}" "$NAME:$remote_path" "$LOG_DIR/worker-$i.log" --worker="$i" ||
      spar_note "could not copy worker $i's log"
  done
fi

# 6. Optionally delete the VM, whatever happened before.
if ((DELETE)); then
  spar_run "${tpu[@]}" delete "$NAME" "${where[@]}" --quiet || {
    rc=$?
    ((status)) || status=$rc
  }
fi
if ((status)); then
  if ((ran)); then
    spar_note "failed with status $status; logs in $LOG_DIR"
  else
    spar_note "failed with status $status"
  fi
fi
exit "$status"
