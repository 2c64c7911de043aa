#!/usr/bin/env bash
# The whole test suite, as `make test` runs it: the tests not marked `slurm` and the SLURM integration tests
# (.ci/slurm-tests.sh: a local single-node cluster) at the same time. The SLURM tests spend most of their time
# waiting on the scheduler, so the two together take little longer than the larger part alone (docs/benchmarks.md,
# "Test suite"). Prints the first part's output as it runs, then the SLURM part's; exits non-zero if either failed.
#   PYTHON   interpreter with the package and pytest (default .venv/bin/python)
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
log=$(mktemp -t genmed-slurm-tests.XXXXXX)
PYTHON=$PYTHON bash .ci/slurm-tests.sh --basetemp="$log.tmp" >"$log" 2>&1 &
slurm=$!
trap 'kill -TERM "$slurm" 2>/dev/null; wait "$slurm"; rm -rf "$log" "$log.tmp"; exit 130' INT TERM
"$PYTHON" -m pytest -m "not slurm" -q
rest=$?
wait "$slurm"
slurm_rc=$?
echo "---- SLURM integration tests (.ci/slurm-tests.sh), run beside the tests above ----"
cat "$log"
rm -rf "$log" "$log.tmp"
if [ "$rest" -ne 0 ]; then exit "$rest"; fi
exit "$slurm_rc"
