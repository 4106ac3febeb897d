# shellcheck shell=bash disable=SC2034,SC2154 # globals shared with tpu_pod.sh
# TPU helpers for tpu_pod.sh (sourced after common.sh, not run): accelerator
# types, the VM's lifecycle through gcloud, and the scripts the workers run.
# They read tpu_pod.sh's globals (NAME, TYPE, where, tpu, qr, ...).

# Hosts in a slice of an API accelerator type: v2/v3/v4/v5p count
# TensorCores (8 per host), v5litepod/v6e count chips (up to 8 on one host,
# 4 per host in larger slices).
tpu_hosts() {
  local n=${1##*-} re='^[1-9][0-9]*$'
  [[ $n =~ $re ]] || return 1
  case $1 in
    v2-* | v3-* | v4-* | v5p-*) echo $(((n + 7) / 8)) ;;
    v5litepod-* | v6e-*) if ((n <= 8)); then echo 1; else echo $((n / 4)); fi ;;
    *) return 1 ;;
  esac
}

tpu_runtime() {
  case $1 in
    v5p-*) echo v2-alpha-tpuv5 ;;
    v5litepod-*) echo v2-alpha-tpuv5-lite ;;
    v6e-*) echo v2-alpha-tpuv6e ;;
    v2-* | v3-* | v4-*) echo tpu-ubuntu2204-base ;;
    *) return 1 ;;
  esac
}

# --type in the API's spelling, or a usage error naming the right one.
tpu_check_type() {
  case $1 in
    v5e-* | v5lite-*) spar_usage_error "--type $1: the API calls v5e slices v5litepod-N; pass --type v5litepod-${1##*-}" ;;
    v6-[0-9]*) spar_usage_error "--type $1: the API calls v6e slices v6e-N; pass --type v6e-${1##*-}" ;;
  esac
}

# ---------------------------------------------------------------------------
# The VM's lifecycle. VM_STATE / VM_TYPE / QR_STATE are "" when absent.

describe_vm=() describe_qr=()
tpu_describe_commands() {
  describe_vm=("${tpu[@]}" describe "$NAME" "${where[@]}" '--format=value(state,acceleratorType)')
  describe_qr=("${qr[@]}" describe "$NAME" "${where[@]}" '--format=value(state.state)')
}

tpu_read_vm() {
  local out
  spar_show "$(spar_join "${describe_vm[@]}")"
  VM_STATE='' VM_TYPE=''
  ((SPAR_DRY_RUN)) && return 0
  if out=$("${describe_vm[@]}" 2>/dev/null); then
    read -r VM_STATE VM_TYPE <<<"$out" || true
  fi
}

tpu_read_qr() {
  spar_show "$(spar_join "${describe_qr[@]}")"
  QR_STATE=''
  ((SPAR_DRY_RUN)) && return 0
  QR_STATE=$("${describe_qr[@]}" 2>/dev/null) || QR_STATE=''
}

# Deletes the VM (through its queued resource when it has one).
tpu_delete() {
  if ((QUEUED)); then
    spar_run "${qr[@]}" delete "$NAME" "${where[@]}" --force --quiet
  else
    spar_run "${tpu[@]}" delete "$NAME" "${where[@]}" --quiet
  fi
}

# Creates the VM, directly or as a queued resource that it waits on until
# ACTIVE (a FAILED or SUSPENDED request is deleted and made again, up to
# QUEUED_RETRIES times).
tpu_create() {
  local try=0
  CREATED=1
  if ! ((QUEUED)); then
    spar_run "${create_vm[@]}"
    return
  fi
  while :; do
    spar_run "${create_qr[@]}"
    spar_comment "wait until the queued resource is ACTIVE, checking every ${POLL_S}s"
    tpu_wait_qr && return 0
    try=$((try + 1))
    ((try <= QUEUED_RETRIES)) || spar_die "queued resource $NAME is ${QR_STATE:-gone} after $try tries; see gcloud compute tpus queued-resources describe $NAME --zone=$ZONE"
    spar_note "queued resource $NAME is ${QR_STATE:-gone}; deleting it and asking again ($try of $QUEUED_RETRIES)"
    spar_run "${qr[@]}" delete "$NAME" "${where[@]}" --force --quiet || true
  done
}

tpu_wait_qr() {
  while :; do
    ((SPAR_DRY_RUN)) || sleep "$POLL_S"
    tpu_read_qr
    ((SPAR_DRY_RUN)) && return 0
    case $QR_STATE in
      ACTIVE) return 0 ;;
      FAILED | SUSPENDED | SUSPENDING | '') return 1 ;;
      *) spar_note "queued resource $NAME is $QR_STATE; waiting" ;;
    esac
  done
}

# Reuses a READY VM of the right type, recreates a PREEMPTED or TERMINATED
# one, creates a missing one; anything else stops the launcher.
tpu_ensure_vm() {
  spar_comment "TPU VM $NAME: reused when READY and of type $TYPE; deleted and created again when PREEMPTED or TERMINATED; created when missing"
  tpu_read_vm
  ((QUEUED)) && tpu_read_qr
  if ((SPAR_DRY_RUN)); then
    tpu_create
    return
  fi
  case $VM_STATE in
    READY)
      tpu_check_vm_type
      spar_note "TPU VM $NAME is READY ($VM_TYPE); reusing it"
      ;;
    PREEMPTED | TERMINATED)
      spar_note "TPU VM $NAME is $VM_STATE and cannot be restarted; deleting it and creating it again"
      tpu_delete
      tpu_create
      ;;
    '')
      case $QR_STATE in
        '') tpu_create ;;
        WAITING_FOR_RESOURCES | ACCEPTED | PROVISIONING | CREATING)
          spar_note "queued resource $NAME exists ($QR_STATE); waiting for it"
          tpu_wait_qr || spar_die "queued resource $NAME is ${QR_STATE:-gone}; delete it: gcloud compute tpus queued-resources delete $NAME --zone=$ZONE --force"
          ;;
        *)
          spar_note "queued resource $NAME is $QR_STATE without a VM; deleting it and asking again"
          tpu_delete
          tpu_create
          ;;
      esac
      ;;
    *) spar_die "TPU VM $NAME is $VM_STATE: wait until it is READY, or delete it (gcloud compute tpus tpu-vm delete $NAME --zone=$ZONE) and run again" ;;
  esac
}

tpu_check_vm_type() {
  if [[ -z $VM_TYPE ]]; then
    spar_note "TPU VM $NAME reports no accelerator type; assuming $TYPE"
  elif [[ $VM_TYPE != "$TYPE" ]]; then
    spar_die "TPU VM $NAME is a $VM_TYPE, not the --type $TYPE asked for: pass --type $VM_TYPE to reuse it, or another --name"
  fi
}

# ---------------------------------------------------------------------------
# Scripts for the workers' login shell (bash). Every word from the user is
# quoted by spar_join; the rest is fixed text. Files in LOGD on a worker:
# worker.log (every run's output, appended), job.pid (the job's process
# group), job.offset (worker.log's size when the run started), job.run (the
# run id, written once the job has started), job.status (its exit status).

# Stops the job recorded in job.pid (its whole process group): TERM, then
# KILL if it is still there after 10 s.
tpu_stop_script() {
  local d=$1
  printf '%s' "if [ -s $d/job.pid ] && pg=\$(cat $d/job.pid) && kill -TERM -- -\"\$pg\" 2>/dev/null; then" \
    " echo \"stopping the job on \$(hostname)\"; i=0;" \
    " while kill -0 -- -\"\$pg\" 2>/dev/null && [ \$i -lt 100 ]; do sleep 0.1; i=\$((i + 1)); done;" \
    " kill -KILL -- -\"\$pg\" 2>/dev/null; fi; true"
}

# Stops leftovers from an earlier run: the job recorded in job.pid, then any
# process holding a TPU device, then libtpu's lockfile.
tpu_cleanup_script() {
  local d=$1
  printf '%s' "{ $(tpu_stop_script "$d");" \
    " pids=\$(sudo -n lsof -t /dev/accel* /dev/vfio/[0-9]* 2>/dev/null | sort -u | tr '\\n' ' ');" \
    " if [ -n \"\$pids\" ]; then echo \"stopping processes that hold the TPU: \$pids\"; sudo -n kill \$pids; sleep 3; sudo -n kill -9 \$pids 2>/dev/null; fi;" \
    " sudo -n rm -f /tmp/libtpu_lockfile 2>/dev/null || rm -f /tmp/libtpu_lockfile; true; }"
}

# Starts JOB... detached (own session, stdin closed, output appended to
# worker.log) unless run RUN_ID already started: a repeated command attaches.
tpu_start_script() {  # tpu_start_script LOGD RUN_ID JOB...
  local d=$1 id
  id=$(spar_join "$2")
  shift 2
  printf '%s' "if [ \"\$(cat $d/job.run 2>/dev/null)\" = $id ]; then echo \"run $id already started on \$(hostname); attaching\";" \
    " else . .venv/bin/activate && $(tpu_cleanup_script "$d") && rm -f $d/job.pid $d/job.status $d/job.run" \
    " && touch $d/worker.log && wc -c < $d/worker.log | tr -d ' ' > $d/job.offset" \
    " && echo \"== run $id, \$(date -u), \$(hostname)\" >> $d/worker.log" \
    " && { setsid nohup bash -c 'echo \$\$ > \"\$0/job.pid\"; \"\$@\"; echo \$? > \"\$0/job.status\"' $d $(spar_join "$@") >> $d/worker.log 2>&1 < /dev/null & }" \
    " && while [ ! -s $d/job.pid ]; do sleep 0.2; done && echo $id > $d/job.run; fi"
}

# Prints the current run's output from worker.log until its job ends, then
# exits with the job's status.
tpu_follow_script() {  # tpu_follow_script LOGD
  local d=$1
  printf '%s' "pid=\$(cat $d/job.pid 2>/dev/null) && off=\$(cat $d/job.offset 2>/dev/null)" \
    " || { echo \"no job was started on \$(hostname)\" >&2; exit 1; };" \
    " tail -c +\$((off + 1)) -F -s 0.5 --pid=\"\$pid\" $d/worker.log 2>/dev/null;" \
    " status=\$(cat $d/job.status 2>/dev/null);" \
    " [ -n \"\$status\" ] || { echo \"the job on \$(hostname) ended without an exit status (killed)\" >&2; status=1; };" \
    " exit \"\$status\""
}
