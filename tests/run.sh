#!/bin/bash
# The whole test suite, on a Debian 12 machine as root: installs what it needs (Debian packages,
# the Python venv, the job environments without hpchub, test users), starts the test LDAP directory (tests/clusters/ldap.sh: its users
# resolve through NSS, so it comes up before the schedulers' daemons and goes down after them), the
# local Slurm and Grid Engine clusters and the SSH login node in front of them
# (tests/clusters/login.sh), rootless podman for the jobs and the test container image (built once,
# cached in /var/lib/hpchub-test/images: tests/clusters/containers.sh, image.sh), runs pytest
# with the real-scheduler tests required (a cluster that is not up fails them, never skips),
# and stops the clusters it started. ruff, mypy (configured in pyproject.toml) and the docs build
# (warnings as errors) run first; a finding of theirs fails the run, after pytest has run too. Without
# arguments pytest runs in three lanes at once (see below); extra arguments go to one pytest.
#
# usage: bash tests/run.sh [PYTEST ARGS...]
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${HPCHUB_VENV:-/opt/hpchub/venv}

bash tests/clusters/install-packages.sh
bash tests/setup-python.sh
# The slow, independent setup runs in the background while the proxy, the users and the clusters
# come up and lint runs: the job environments without hpchub (JupyterHub 3 to 6, cached in
# /opt/hpchub-test/envs; minutes of downloads on a fresh machine) and rootless podman with the
# test container image (about 85 s when it must be built, a stamp check otherwise).
background=$(mktemp -d /tmp/hpchub-run.XXXXXX)
bash tests/setup-envs.sh >"$background/envs.log" 2>&1 &
envs_pid=$!
{ bash tests/clusters/containers.sh up && bash tests/clusters/image.sh build; } >"$background/image.log" 2>&1 &
image_pid=$!
finish_background() {  # wait for a background step; its log, and the end of the run, if it failed
    local pid=$1 name=$2 log=$3
    if ! wait "$pid"; then
        cat "$log" >&2
        echo "run.sh: $name failed (its output is above)" >&2
        exit 1
    fi
    cat "$log"
}
bash tests/setup-proxy.sh >/dev/null
bash tests/clusters/users.sh

started=()
stop_started() {
    local i cluster
    # In reverse: the login node sits on the Slurm bridge and is a Grid Engine submit host.
    for ((i = ${#started[@]} - 1; i >= 0; i--)); do
        cluster=${started[i]}
        bash "tests/clusters/$cluster.sh" down || echo "run.sh: could not stop $cluster" >&2
    done
}
trap stop_started EXIT
for cluster in ldap slurm sge login; do
    if ! bash "tests/clusters/$cluster.sh" status >/dev/null 2>&1; then
        started+=("$cluster")
        bash "tests/clusters/$cluster.sh" up
    fi
done

lint=0
echo "---- ruff check hpchub tests bench ----"
"$venv/bin/ruff" check hpchub tests bench || lint=$?
echo "---- mypy hpchub ----"
"$venv/bin/mypy" hpchub || lint=$?
echo "---- bash docs/build.sh ----"
HPCHUB_VENV=$venv bash docs/build.sh || lint=$?

finish_background "$envs_pid" "tests/setup-envs.sh" "$background/envs.log"
finish_background "$image_pid" "tests/clusters/containers.sh up, tests/clusters/image.sh build" "$background/image.log"

status=0
if [ "$#" -eq 0 ]; then
    # Three pytest processes at once, since the tests of the real clusters mostly wait (a scheduler's
    # interval, a server's start). The first lane: Slurm, the login node and LDAP, starting with the
    # tests that need Slurm and the login node to themselves (marker `alone`). The second: Grid
    # Engine's own tests, then modules whose Slurm tests wait for the first lane's `alone` tests
    # (marker `second_lane`). The third: the modules that touch no cluster, test user or home (marker
    # `beside`). tests/conftest.py says which test goes where, and why they cannot disturb each other.
    # --durations: the slowest tests, for whoever keeps the suite within its time.
    export HPCHUB_LANE_BARRIER=$background/alone-tests-done
    HPCHUB_REQUIRE_CLUSTERS=1 "$venv/bin/pytest" -m beside -p no:cacheprovider --basetemp="$background/beside" \
        >"$background/beside.log" 2>&1 &
    beside_pid=$!
    HPCHUB_LANE=second HPCHUB_REQUIRE_CLUSTERS=1 "$venv/bin/pytest" -m second_lane -p no:cacheprovider \
        --basetemp="$background/second" --durations=10 >"$background/second.log" 2>&1 &
    second_pid=$!
    HPCHUB_LANE=first HPCHUB_REQUIRE_CLUSTERS=1 "$venv/bin/pytest" -m "not beside and not second_lane and not busy and not empty_queue" \
        --durations=15 || status=$?
    lanes=0
    wait "$second_pid" || lanes=$?
    wait "$beside_pid" || lanes=$?
    echo "---- the second lane: Grid Engine's own tests and conftest.SECOND_LANE_MODULES (pytest -m second_lane) ----"
    cat "$background/second.log"
    echo "---- the tests beside the clusters' (pytest -m beside) ----"
    cat "$background/beside.log"
    [ "$status" -ne 0 ] || status=$lanes
    # The tests that need the queues to themselves (conftest.AFTER_THE_LANES): the busy cluster's fill
    # a cluster for seconds (tests/clusters/busy.sh), which would make the lanes' jobs wait; the form's
    # estimates assert "starts now", which the lanes' jobs would make untrue.
    echo "---- after the lanes, alone: the busy cluster's tests and the form's estimates (pytest -m 'busy or empty_queue') ----"
    HPCHUB_REQUIRE_CLUSTERS=1 "$venv/bin/pytest" -m "busy or empty_queue" -p no:cacheprovider || status=$?
else
    HPCHUB_REQUIRE_CLUSTERS=1 "$venv/bin/pytest" --durations=15 "$@" || status=$?
fi
rm -rf "$background"
if [ "$status" -ne 0 ]; then
    # What the schedulers saw, for whoever reads a red CI log.
    echo "---- scheduler state after the failed run ----"
    sinfo 2>&1 | head -20 || true
    squeue --states=all 2>&1 | head -40 || true
    qstat -f -u '*' 2>&1 | head -40 || true
fi
if [ "$lint" -ne 0 ]; then
    echo "run.sh: ruff, mypy or the docs build found problems (see above)" >&2
    [ "$status" -ne 0 ] || status=$lint
fi
exit "$status"
