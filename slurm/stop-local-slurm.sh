#!/usr/bin/env bash
# Stop the single-node SLURM cluster started by slurm/start-local-slurm.sh DIR.
#
# Usage: slurm/stop-local-slurm.sh DIR [--purge]
#   --purge  also delete DIR (state, accounting database, logs) afterwards
#
# Cancels the cluster's jobs, then stops slurmd, slurmctld, slurmdbd, mariadbd and munged, each only
# through the pid file it wrote in DIR/run and only if that pid still runs the expected program
# (never by name). Idempotent: missing or stale pid files are skipped; a missing DIR is not an error.
set -euo pipefail

log() { printf '[local-slurm] %s\n' "$*" >&2; }

DIR=""
PURGE=0
for a in "$@"; do
  case "$a" in
    --purge) PURGE=1 ;;
    -*) log "unknown option $a"; exit 2 ;;
    *) DIR=$a ;;
  esac
done
[ -n "$DIR" ] || { log "usage: $0 DIR [--purge]"; exit 2; }
case "$DIR" in /*) ;; *) DIR="$(pwd)/$DIR" ;; esac

if [ ! -d "$DIR" ]; then
  log "nothing to stop: $DIR does not exist"
  exit 0
fi
if [ "$PURGE" = 1 ] && [ ! -e "$DIR/etc/slurm.conf" ] && [ -n "$(ls -A "$DIR")" ] && [ ! -d "$DIR/run" ]; then
  log "refusing to purge $DIR: it does not look like a start-local-slurm.sh directory"
  exit 2
fi
exec 9>"$DIR/.lock"
flock -w 120 9 || { log "another start/stop holds $DIR/.lock for 120 s"; exit 1; }
export SLURM_CONF=$DIR/etc/slurm.conf

gone() {  # gone PID: the process has exited (a zombie counts as exited)
  [ ! -d "/proc/$1" ] || [ "$(sed -n 's/.*) \(.\).*/\1/p' "/proc/$1/stat" 2>/dev/null)" = Z ]
}
pid_of() {  # pid_of NAME PIDFILE: print the pid if it is alive and runs NAME
  local name=$1 pidfile=$2 pid
  [ -s "$pidfile" ] || return 1
  pid=$(tr -dc '0-9' < "$pidfile")
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] || return 1
  gone "$pid" && return 1
  echo "$pid"
}
stop_daemon() {  # stop_daemon NAME PIDFILE: TERM, wait up to 30 s, then KILL
  local name=$1 pidfile=$2 pid
  if ! pid=$(pid_of "$name" "$pidfile"); then
    rm -f "$pidfile"
    return 0
  fi
  log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 120); do
    gone "$pid" && break
    sleep 0.25
  done
  if ! gone "$pid"; then
    log "$name (pid $pid) still running after 30 s: sending KILL"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.5
  fi
  rm -f "$pidfile"
}

# Cancel jobs first: slurmstepd and the jobs' processes outlive slurmd, so let Slurm clean them up
# while it still can.
if pid_of slurmctld "$DIR/run/slurmctld.pid" >/dev/null && [ -f "$SLURM_CONF" ]; then
  jobs=$(timeout 10 squeue -h -o '%A' 2>/dev/null || true)
  if [ -n "$jobs" ]; then
    log "cancelling jobs: $(tr '\n' ' ' <<<"$jobs")"
    # shellcheck disable=SC2086
    timeout 10 scancel $jobs 2>/dev/null || true
    for _ in $(seq 1 120); do
      [ -z "$(timeout 10 squeue -h -o '%A' 2>/dev/null || true)" ] &&
        ! compgen -G "$DIR/spool/*_[0-9]*.[0-9]*" >/dev/null && break  # no job step sockets left
      sleep 0.25
    done
  fi
fi

stop_daemon slurmd "$DIR/run/slurmd.pid"
stop_daemon slurmctld "$DIR/run/slurmctld.pid"
stop_daemon slurmdbd "$DIR/run/slurmdbd.pid"
stop_daemon mariadbd "$DIR/run/mariadbd.pid"
stop_daemon munged "$DIR/run/munged.pid"

if [ "$PURGE" = 1 ]; then
  exec 9>&-
  rm -rf "$DIR"
  log "stopped; removed $DIR"
else
  log "stopped"
fi
