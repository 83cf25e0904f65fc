#!/bin/bash
# The Python environment for the tests and for jobs: a venv made from Debian's /usr/bin/python3
# in a world-readable place (jobs run as ordinary users, who cannot enter /root's pyenv),
# holding hpchub (installed from this checkout, not editable, so jobs never read the
# checkout), JupyterLab and the test, lint and docs tools.
#
# usage: tests/setup-python.sh          (env HPCHUB_VENV overrides /opt/hpchub/venv)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${HPCHUB_VENV:-/opt/hpchub/venv}

if [ ! -x "$venv/bin/python" ]; then
    [ -x /usr/bin/python3 ] || { echo "setup-python.sh: /usr/bin/python3 missing (apt-get install python3-venv)" >&2; exit 1; }
    mkdir -p "$(dirname "$venv")"
    /usr/bin/python3 -m venv "$venv"
fi
# setuptools copies modules into build/ and never removes one: after a module moved, an old build/
# would install the old module too.
rm -rf build
log=$(mktemp /tmp/hpchub-pip.XXXXXX)
trap 'rm -f "$log"' EXIT
if ! "$venv/bin/pip" install --disable-pip-version-check -q ".[hub,test,lint,docs]" jupyterlab >"$log" 2>&1; then
    cat "$log" >&2
    echo "setup-python.sh: pip install failed" >&2
    exit 1
fi
"$venv/bin/pip" check --disable-pip-version-check >/dev/null || { "$venv/bin/pip" check >&2; exit 1; }
chmod -R a+rX "$venv"
echo "python: $venv ready ($("$venv/bin/python" --version), hpchub $("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("hpchub"))'))"
