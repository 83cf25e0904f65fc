#!/bin/bash
# The job environments WITHOUT hpchub that the tests start servers in (tests/test_e2e_envs.py): what
# an admin's site module or a user's own venv holds. World-readable (jobs run as the test users),
# made from Debian's /usr/bin/python3 with packages from PyPI, and cached: an env is rebuilt only
# when its requirement line changes (its .hpchub-test-spec file holds the line it was built from).
#
#   jh4            JupyterHub 4.x singleuser, jupyter_server 2.x, JupyterLab 4
#   jh5            JupyterHub 5.x, JupyterLab 4
#   jh6            JupyterHub 6.x (the hub's own major version), JupyterLab 4
#   jh3            JupyterHub 3.x: too old, a server job must fail at once naming it
#   no-singleuser  a venv with jupyter_server but no JupyterHub: a server job must fail at once
#   teach          JupyterHub 6.1.1, JupyterLab 4.6.6, jupyter-collaboration 5.0.x and jupytext: a
#                  course's env (environment.collaboration and environment.jupytext, test_e2e_teach.py)
#
# usage: tests/setup-envs.sh            (env HPCHUB_TEST_ENVS overrides /opt/hpchub-test/envs)
set -euo pipefail
root=${HPCHUB_TEST_ENVS:-/opt/hpchub-test/envs}

declare -A SPECS=(
    [jh4]="jupyterhub>=4,<5 jupyter_server>=2,<3 jupyterlab>=4,<5"
    [jh5]="jupyterhub>=5,<6 jupyterlab>=4,<5"
    [jh6]="jupyterhub>=6,<7 jupyterlab>=4,<5"
    [jh3]="jupyterhub>=3,<4 jupyter_server>=2,<3"
    [no-singleuser]="jupyter_server>=2,<3"
    [teach]="jupyterhub==6.1.1 jupyterlab==4.6.6 jupyter-collaboration>=5.0,<5.1 jupytext>=1.16"
)

mkdir -p "$root"
chmod a+rx "$(dirname "$root")" "$root"
build() {  # build one env unless its spec file says it is built; a failure says which and why
    local name=$1 env=$root/$1 spec=${SPECS[$1]} log
    if [ "$(cat "$env/.hpchub-test-spec" 2>/dev/null)" = "$spec" ]; then
        return 0
    fi
    rm -rf "$env"
    /usr/bin/python3 -m venv "$env"
    log=$(mktemp /tmp/hpchub-envs.XXXXXX)
    # shellcheck disable=SC2086  # the spec is a list of requirements
    if ! "$env/bin/pip" install --disable-pip-version-check -q $spec >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        echo "setup-envs.sh: pip install for $name failed" >&2
        return 1
    fi
    rm -f "$log"
    if "$env/bin/python" -I -c "import hpchub" 2>/dev/null; then
        echo "setup-envs.sh: $name holds hpchub; it must not" >&2
        return 1
    fi
    echo "$spec" >"$env/.hpchub-test-spec"
    chmod -R a+rX "$env"
}
# All at once: on a fresh machine the time is mostly downloads and unpacking, which overlap well.
pids=()
for name in jh3 jh4 jh5 jh6 no-singleuser teach; do
    build "$name" &
    pids+=($!)
done
failed=0
for pid in "${pids[@]}"; do
    wait "$pid" || failed=1
done
[ "$failed" -eq 0 ] || exit 1
for name in jh4 jh5 jh6; do
    echo "env $name: $("$root/$name/bin/python" -c 'import importlib.metadata as m; print(" ".join(f"{p} {m.version(p)}" for p in ("jupyterhub", "jupyter_server", "jupyterlab")))')"
done
echo "env teach: $("$root/teach/bin/python" -c 'import importlib.metadata as m; print(" ".join(f"{p} {m.version(p)}" for p in ("jupyterhub", "jupyterlab", "jupyter-collaboration", "jupytext")))')"
