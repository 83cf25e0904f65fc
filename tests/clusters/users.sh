#!/bin/bash
# Create the test users alice, bob and carol (uid >= 1000, home under /home,
# no password but not locked, so key login works, subordinate uids and gids for
# rootless podman in their jobs) and check that root can run commands as them
# with sudo. Idempotent.
#
# usage: users.sh
set -euo pipefail

PROG=users.sh
. "$(dirname "$(readlink -f "$0")")/lib.sh"

if [ $# -ne 0 ]; then
    echo "usage: $PROG" >&2
    echo "  Creates the test users alice, bob, carol (idempotent)." >&2
    exit 2
fi

need_root
need_cmds useradd usermod getent sudo

for u in alice bob carol; do
    if ! getent passwd "$u" >/dev/null; then
        useradd --create-home --home-dir "/home/$u" --shell /bin/bash \
            --user-group -K UID_MIN=1000 -K UID_MAX=59999 "$u" ||
            die "useradd $u failed"
    fi
    IFS=: read -r _ _ uid _ _ home _ < <(getent passwd "$u")
    [ "$uid" -ge 1000 ] || die "user $u exists with uid $uid < 1000 (batch systems refuse it)"
    if [ ! -d "$home" ]; then
        install -d -o "$u" -g "$(id -gn "$u")" -m 0755 "$home"
    fi
    # useradd leaves the account locked ("!"); "*" keeps password login
    # impossible but lets sshd accept key login.
    if [ "$(getent shadow "$u" | cut -d: -f2)" != '*' ]; then
        usermod -p '*' "$u"
    fi
    ensure_subids "$u"
    out=$(sudo -n -u "$u" id -un 2>&1) && [ "$out" = "$u" ] ||
        die "root cannot run commands as $u with sudo: $out"
done
