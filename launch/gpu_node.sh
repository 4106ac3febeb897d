#!/usr/bin/env bash
# Runs one spar_jax command on this machine's GPUs: one process drives every
# local GPU. `launch/gpu_node.sh --help` lists the flags; docs/launch.md has
# examples.
set -euo pipefail
SPAR_PROG=launch/gpu_node.sh
# shellcheck source=launch/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<'EOF'
usage: launch/gpu_node.sh [flags] -- COMMAND [ARG...]
       launch/gpu_node.sh --setup-only [flags]

Creates (or updates) a virtualenv with requirements.txt and jax[cuda12],
then runs COMMAND once from the repository root with the virtualenv first on
PATH. The output of both also goes to a log file (appended). JAX runs one
process over all GPUs it can see, so no distributed setup is needed.

flags:
  --venv DIR          virtualenv directory, relative to the repository root (default: .venv)
  --python PYTHON     interpreter that creates the virtualenv, Python >= 3.11 (default: python3)
  --skip-install      use the virtualenv as it is (no pip)
  --setup-only        create and install the virtualenv, run nothing (no COMMAND);
                      e.g. once on a SLURM login node for launch/slurm.sbatch
  --gpus LIST         GPUs to use, e.g. 0,1,2,3 (sets CUDA_VISIBLE_DEVICES; default: all)
  --mem-fraction F    XLA_PYTHON_CLIENT_MEM_FRACTION, the share of each GPU's memory
                      JAX preallocates (default: $XLA_PYTHON_CLIENT_MEM_FRACTION or 0.9)
  --env KEY=VALUE     extra environment variable for COMMAND, repeatable
                      (e.g. --env XLA_FLAGS=... or --env NCCL_DEBUG=INFO)
  --log FILE          log file, relative to the repository root
                      (default: logs/gpu_node-<date>-<time>.log)
  --dry-run           print the commands, one per line, instead of running them
  -h, --help          show this help

example:
  launch/gpu_node.sh -- python -m spar_jax spar --config configs/spar_llama3_8b.py \
    --config.mesh='(1,-1,1)'
EOF
}

VENV=.venv PYTHON=python3 GPUS='' LOG=''
MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}
SKIP_INSTALL=0 SETUP_ONLY=0
EXTRA_ENV=() SPAR_CMD=()

spar_split_args "$@"
set -- ${SPAR_ARGS[@]+"${SPAR_ARGS[@]}"}
while (($#)); do
  case $1 in
    -h | --help) usage && exit 0 ;;
    --dry-run) SPAR_DRY_RUN=1 ;;
    --venv) spar_takes_value "$@" && VENV=$2 && shift ;;
    --python) spar_takes_value "$@" && PYTHON=$2 && shift ;;
    --skip-install) SKIP_INSTALL=1 ;;
    --setup-only) SETUP_ONLY=1 ;;
    --gpus) spar_takes_value "$@" && GPUS=$2 && shift ;;
    --mem-fraction) spar_takes_value "$@" && MEM_FRACTION=$2 && shift ;;
    --env) spar_takes_value "$@" && spar_check_env_kv --env "$2" && EXTRA_ENV+=("$2") && shift ;;
    --log) spar_takes_value "$@" && LOG=$2 && shift ;;
    --) shift && SPAR_CMD=("$@") && break ;;
    -*) spar_usage_error "unknown flag $1" ;;
    *) spar_usage_error "unexpected argument '$1': put the command after --, e.g. -- python -m spar_jax ..." ;;
  esac
  shift
done

if ((SETUP_ONLY)); then
  ((${#SPAR_CMD[@]} == 0)) || spar_usage_error "--setup-only runs no command; drop --setup-only or the command after --"
  ((SKIP_INSTALL == 0)) || spar_usage_error "--setup-only and --skip-install together do nothing; pass one of them"
else
  spar_need_command "python -m spar_jax spar --config configs/spar_llama3_8b.py"
fi
gpus_re='^[0-9]+(,[0-9]+)*$'
[[ -z $GPUS || $GPUS =~ $gpus_re ]] || spar_usage_error "--gpus '$GPUS': use comma-separated GPU indices, e.g. --gpus 0,1,2,3"
spar_check_mem_fraction --mem-fraction "$MEM_FRACTION"
VENV=$(spar_abspath "$VENV")
LOG=${LOG:-logs/gpu_node-$(date +%Y%m%d-%H%M%S).log}

if ! ((SPAR_DRY_RUN)); then
  if ((SKIP_INSTALL)); then
    [[ -x $VENV/bin/python ]] || spar_usage_error "--skip-install: no virtualenv at $VENV; drop --skip-install or pass --venv DIR"
  else
    command -v "$PYTHON" >/dev/null || spar_usage_error "--python $PYTHON: not found; pass --python /path/to/python3.11"
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
      spar_usage_error "--python $PYTHON: spar_jax needs Python >= 3.11; pass e.g. --python python3.11"
  fi
fi

spar_show "$(spar_join cd "$SPAR_ROOT")"
cd "$SPAR_ROOT"
spar_run mkdir -p "$(dirname "$LOG")"

# The virtualenv: `python -m venv` on an existing one keeps its packages, and
# pip skips what is already installed, so this also updates an old setup.
# Its output goes to the log too, where a failed install can be read later.
if ! ((SKIP_INSTALL)); then
  spar_run_logged "$LOG" "$PYTHON" -m venv "$VENV"
  spar_run_logged "$LOG" "$VENV/bin/pip" install --upgrade pip
  spar_run_logged "$LOG" "$VENV/bin/pip" install -r requirements.txt "$(spar_jax_requirement cuda12)"
  spar_run_logged "$LOG" "$VENV/bin/pip" install --no-deps -e .
fi
((SETUP_ONLY)) && exit 0

# No XLA_FLAGS or NCCL settings by default: one process on one node needs
# none, and XLA aborts on flags its version does not know. Pass them with --env.
run_env=(VIRTUAL_ENV="$VENV" PATH="$VENV/bin:$PATH" XLA_PYTHON_CLIENT_MEM_FRACTION="$MEM_FRACTION" PYTHONUNBUFFERED=1)
[[ -z $GPUS ]] || run_env+=(CUDA_VISIBLE_DEVICES="$GPUS")
run_env+=(${EXTRA_ENV[@]+"${EXTRA_ENV[@]}"})

status=0
spar_run_logged "$LOG" env "${run_env[@]}" "${SPAR_CMD[@]}" || status=$?
((status == 0)) || spar_note "failed with status $status; log in $LOG"
exit "$status"
