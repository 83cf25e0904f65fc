#!/bin/bash
# The docs site: Sphinx with MyST Markdown and the pydata theme (the `docs` extra), built into
# docs/_build/html. Warnings are errors (-W), every internal link and cross-reference is checked
# (-n, MyST's link checks), the reference pages are generated from the code, and nothing is fetched
# from the network. Exit status non-zero on any warning.
#
# usage: bash docs/build.sh          (env HPCHUB_VENV: the venv with the docs extra, default /opt/hpchub/venv)
set -euo pipefail
cd "$(dirname "$0")"
venv=${HPCHUB_VENV:-/opt/hpchub/venv}
sphinx=$venv/bin/sphinx-build
[ -x "$sphinx" ] || { echo "docs/build.sh: $sphinx missing: pip install '.[docs]' into $venv (tests/setup-python.sh does)" >&2; exit 1; }
# -E -a: a fresh build every time, so a warning in a page that did not change is not hidden.
exec "$sphinx" -E -a -W --keep-going -n -q -b html . _build/html
