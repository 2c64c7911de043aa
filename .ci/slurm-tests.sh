#!/usr/bin/env bash
# CI: start the local single-node SLURM cluster, run the tests marked `slurm` against it, stop it (also on failure
# or interruption), and exit with pytest's status. Needs root (installs Debian packages on a fresh machine).
#   GENMED_SLURM_DIR   cluster directory (default /tmp/genmed-slurm)
#   PYTHON             interpreter with the package and pytest (default .venv/bin/python)
#   extra arguments    passed to pytest, e.g. `.ci/slurm-tests.sh -k array`
# A cluster that was already running in that directory (a developer's) is used and left running.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${GENMED_SLURM_DIR:-/tmp/genmed-slurm}
PYTHON=${PYTHON:-.venv/bin/python}

was_running=0
if [ -f "$DIR/etc/slurm.conf" ] && command -v sinfo >/dev/null &&
  SLURM_CONF=$DIR/etc/slurm.conf timeout 10 sinfo -h >/dev/null 2>&1; then
  was_running=1
fi
# shellcheck disable=SC2317  # called by the EXIT trap
stop() {
  if [ "$was_running" = 1 ]; then
    echo "leaving the local SLURM cluster in $DIR running (it was running before)" >&2
  else
    bash slurm/stop-local-slurm.sh "$DIR" || echo "warning: stopping the local SLURM cluster failed" >&2
  fi
}
trap stop EXIT
trap 'exit 130' INT TERM

start=$(date +%s)
exports=$(bash slurm/start-local-slurm.sh "$DIR" </dev/null)
eval "$exports"
echo "local SLURM cluster up in $(( $(date +%s) - start )) s (SLURM_CONF=$SLURM_CONF)" >&2

rc=0
"$PYTHON" -m pytest -m slurm -q "$@" || rc=$?
exit "$rc"
