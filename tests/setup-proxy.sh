#!/bin/bash
# configurable-http-proxy (JupyterHub's proxy, from npm) under /opt/hpchub/proxy.
# Uses the machine's Node.js; installs Debian's nodejs and npm if there is none.
#
# usage: tests/setup-proxy.sh        (prints the proxy's path)
set -euo pipefail
prefix=${HPCHUB_PROXY_PREFIX:-/opt/hpchub/proxy}
proxy=$prefix/node_modules/.bin/configurable-http-proxy
if [ -x "$proxy" ] && "$proxy" --version >/dev/null 2>&1; then
    echo "$proxy"
    exit 0
fi
if ! command -v npm >/dev/null || ! command -v node >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nodejs npm >/dev/null
fi
mkdir -p "$prefix"
log=$(mktemp /tmp/hpchub-npm.XXXXXX)
trap 'rm -f "$log"' EXIT
if ! npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error configurable-http-proxy@5 >"$log" 2>&1; then
    cat "$log" >&2
    echo "setup-proxy.sh: npm install configurable-http-proxy failed" >&2
    exit 1
fi
"$proxy" --version >/dev/null
echo "$proxy"
