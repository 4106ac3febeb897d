# shellcheck shell=bash
# Helpers shared by the launchers in launch/ (sourced, not run).
#
# Every launcher builds each command as a bash array and hands it to
# `spar_run`: with --dry-run the command is printed on one line, quoted so
# that pasting the line into bash runs exactly that command; otherwise it is
# printed to stderr with a "+ " prefix and run. User arguments are never
# evaluated: they only pass through arrays and through `spar_join`.
#
# Bash 3.2 compatible (the macOS default, where tpu_pod.sh often runs): no
# associative arrays or mapfile, and empty arrays are expanded as
# ${a[@]+"${a[@]}"} because `set -u` rejects "${a[@]}" there.

SPAR_DRY_RUN=0
SPAR_PROG=${SPAR_PROG:-${0##*/}}
# The repository root: launch/..
SPAR_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Bad usage: one line naming the flag and the fix, exit status 2.
spar_usage_error() {
  printf '%s: %s (see %s --help)\n' "$SPAR_PROG" "$1" "$SPAR_PROG" >&2
  exit 2
}

# A missing tool or a failed step: one line, exit status 1.
spar_die() {
  printf '%s: %s\n' "$SPAR_PROG" "$1" >&2
  exit 1
}

spar_note() {
  printf '%s: %s\n' "$SPAR_PROG" "$1" >&2
}

# spar_takes_value "$@": the flag in $1 needs a value in $2 that is not a flag.
spar_takes_value() {
  if (($# < 2)) || [[ $2 == -* && $2 != -[0-9]* ]]; then
    spar_usage_error "$1 needs a value, e.g. $1 VALUE"
  fi
}

# spar_takes_any_value "$@": like spar_takes_value, but the value may look like
# a flag (--ssh-arg --internal-ip).
spar_takes_any_value() {
  if (($# < 2)); then
    spar_usage_error "$1 needs a value, e.g. $1=VALUE"
  fi
}

# SPAR_ARGS=(the arguments with --flag=value split into --flag value, up to "--").
spar_split_args() {
  SPAR_ARGS=()
  while (($#)); do
    case $1 in
      --) SPAR_ARGS+=("$@") && return 0 ;;
      --*=*) SPAR_ARGS+=("${1%%=*}" "${1#*=}") ;;
      *) SPAR_ARGS+=("$1") ;;
    esac
    shift
  done
}

spar_check_env_kv() {  # spar_check_env_kv FLAG KEY=VALUE
  local re='^[A-Za-z_][A-Za-z0-9_]*='
  [[ $2 =~ $re ]] || spar_usage_error "$1 '$2': use $1 KEY=VALUE with KEY a shell variable name"
}

spar_check_positive_int() {  # spar_check_positive_int FLAG VALUE
  local re='^[1-9][0-9]*$'
  [[ $2 =~ $re ]] || spar_usage_error "$1 '$2': expected a positive integer"
}

spar_check_mem_fraction() {  # spar_check_mem_fraction FLAG VALUE
  local re='^(0?\.[0-9]*[1-9][0-9]*|1(\.0*)?)$'
  [[ $2 =~ $re ]] || spar_usage_error "$1 '$2': expected a fraction in (0, 1], e.g. $1 0.9"
}

# The command after "--": error unless there is one.
spar_need_command() {  # spar_need_command EXAMPLE
  ((${#SPAR_CMD[@]})) || spar_usage_error "no command given: put it after --, e.g. -- $1"
}

# Prints its arguments as one line of bash words that bash (and Python's
# shlex.split) reads back as exactly these arguments: plain words stay bare,
# others are single-quoted (a ' inside becomes '\''), and words with control
# characters (newlines, tabs) go through printf %q.
spar_join() {
  local out='' w rest plain='^[A-Za-z0-9_@%+=:,./-]+$' sq="'" sq_escaped="'\\''"
  for w in "$@"; do
    if [[ -z $w ]]; then
      w="''"
    elif [[ $w =~ $plain ]]; then
      :
    elif [[ $w == *[[:cntrl:]]* ]]; then
      printf -v w '%q' "$w"
    else
      # No ${w//pattern/replacement}: its quoting rules differ between bash versions.
      rest=$w
      w=$sq
      while [[ $rest == *"$sq"* ]]; do
        w+="${rest%%"$sq"*}$sq_escaped"
        rest=${rest#*"$sq"}
      done
      w+="$rest$sq"
    fi
    out+="${out:+ }$w"
  done
  printf '%s' "$out"
}

# One command line: with --dry-run on stdout, otherwise on stderr after "+ ".
spar_show() {
  if ((SPAR_DRY_RUN)); then
    printf '%s\n' "$1"
  else
    printf '+ %s\n' "$1" >&2
  fi
}

# A comment line for the plan (shown like a command; a no-op if pasted).
spar_comment() {
  spar_show "# $1"
}

# spar_run CMD...: shows the command, then runs it unless --dry-run.
spar_run() {
  spar_show "$(spar_join "$@")"
  ((SPAR_DRY_RUN)) || "$@"
}

# spar_run_logged LOG CMD...: like spar_run, with stdout and stderr also
# appended to LOG. Returns the command's status (the caller sets pipefail).
spar_run_logged() {
  local log=$1
  shift
  spar_show "$(spar_join "$@") 2>&1 | tee -a $(spar_join "$log")"
  ((SPAR_DRY_RUN)) && return 0
  "$@" 2>&1 | tee -a "$log"
}

# The jax version pinned in requirements.txt ("" if none), so that jax[tpu] /
# jax[cuda12] install the plugin matching the pinned jax and jaxlib.
spar_jax_version() {
  sed -n 's/^jax==\([^[:space:]#;]*\).*/\1/p' "$SPAR_ROOT/requirements.txt" 2>/dev/null | head -n 1
}

# spar_jax_requirement EXTRA: "jax[EXTRA]==<pinned version>" (unpinned if no pin).
spar_jax_requirement() {
  local version
  version=$(spar_jax_version)
  printf 'jax[%s]%s' "$1" "${version:+==$version}"
}

# "0,1,...,N-1"
spar_seq_csv() {
  local i out=''
  for ((i = 0; i < $1; i++)); do
    out+="${out:+,}$i"
  done
  printf '%s' "$out"
}

# An absolute path: relative ones are taken from the repository root.
spar_abspath() {
  case $1 in
    /*) printf '%s' "$1" ;;
    *) printf '%s/%s' "$SPAR_ROOT" "${1#./}" ;;
  esac
}
