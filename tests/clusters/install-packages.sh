#!/bin/bash
# Install the Debian 12 packages the hpchub test clusters need (Slurm + Son of
# Grid Engine + the login node's OpenSSH + helpers). Idempotent: returns at once
# when all are installed.
#
# usage: install-packages.sh [all|slurm|sge|login|ldap|containers]     (default: all)
#   login: a Slurm client with sshd (the login node container of docker-compose.test.yml)
#   ldap: OpenLDAP's slapd and nslcd (tests/clusters/ldap.sh), preseeded to leave the host alone
#   containers: rootless podman for the jobs and mmdebstrap for the test image
#               (tests/clusters/containers.sh, tests/clusters/image.sh)
set -euo pipefail

PROG=install-packages.sh

usage() {
    echo "usage: $PROG [all|slurm|sge|login|ldap|containers]" >&2
    echo "  Installs (apt) the packages for the hpchub test clusters; no-op when present." >&2
    exit 2
}

[ $# -le 1 ] || usage
what=${1:-all}

# shellcheck: tests/test_containers.py checks every rendered job script with it.
common=(sudo iproute2 iptables procps psmisc python3-venv util-linux shellcheck)
slurm=(slurm-wlm slurmctld slurmd slurm-client munge)
# Slurm accounting (slurm.sh starts MariaDB and slurmdbd itself, never the packages' services).
slurm_accounting=(slurmdbd mariadb-server)
# Never add slurm-wlm-torque: it ships qsub/qstat and conflicts with
# gridengine-client. Never purge libmunge2: gridengine-client depends on it.
sge=(gridengine-master gridengine-exec gridengine-client)
# The login node of the SSH tests (tests/clusters/login.sh); the package's own
# /etc/ssh/sshd_config is never used (login.sh runs sshd with its own config).
ssh=(openssh-server openssh-client)
# Users and groups from LDAP (tests/clusters/ldap.sh runs slapd and nslcd with its own configs).
ldap=(slapd ldap-utils nslcd libnss-ldapd)
# Rootless podman as the users' jobs run it (tests/clusters/containers.sh configures it): uidmap
# gives newuidmap/newgidmap for the user namespace, slirp4netns podman's rootless networking (our
# jobs use --network host, but podman 4.3 wants it installed), runc the OCI runtime (Debian's
# default crun refuses the hybrid cgroup hierarchy of our machines). mmdebstrap builds the test
# image's Debian root from the apt registry (tests/clusters/image.sh).
containers=(podman uidmap slirp4netns runc mmdebstrap)
# The page tests' headless browser (tests/helpers/browser.py drives it with Playwright).
browser=(chromium)

case "$what" in
    all) pkgs=("${slurm[@]}" "${slurm_accounting[@]}" "${sge[@]}" "${ssh[@]}" "${ldap[@]}" "${browser[@]}" "${containers[@]}" "${common[@]}") ;;
    slurm) pkgs=("${slurm[@]}" "${slurm_accounting[@]}" "${common[@]}") ;;
    sge) pkgs=("${sge[@]}" "${common[@]}") ;;
    login) pkgs=(slurm-client munge "${ssh[@]}" "${common[@]}") ;;
    ldap) pkgs=("${ldap[@]}" "${common[@]}") ;;
    containers) pkgs=("${containers[@]}" "${common[@]}") ;;
    -h | --help) usage ;;
    *) usage ;;
esac

die() {
    echo "$PROG: error: $*" >&2
    exit 1
}

missing() {
    local p status
    for p in "${pkgs[@]}"; do
        status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
        [ "${status:0:2}" = ii ] || echo "$p"
    done
}

todo=$(missing)
[ -n "$todo" ] || exit 0 # fast path: everything is installed

[ "$(id -u)" -eq 0 ] || die "must run as root to install: ${todo//$'\n'/ }"
command -v apt-get >/dev/null || die "apt-get not found (Debian 12 expected)"

export DEBIAN_FRONTEND=noninteractive
log=$(mktemp /tmp/hpchub-install.XXXXXX)
policy_created=
cleanup() {
    [ -z "$policy_created" ] || rm -f /usr/sbin/policy-rc.d
    rm -f "$log"
}
trap cleanup EXIT

# Package scripts must not start daemons (no systemd here; the cluster
# scripts start them). Docker's debian image already ships this file.
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    policy_created=1
fi

if [ "$what" = all ] || [ "$what" = sge ]; then
    # gridengine-master's postinst (init_cluster) fails halfway when the
    # hostname does not resolve, leaving a broken cell behind.
    getent hosts "$(hostname)" >/dev/null ||
        die "hostname '$(hostname)' does not resolve (add it to /etc/hosts); Grid Engine needs it"
    # The postinst of gridengine-master creates the cell (init_cluster) only
    # when told to; act_qmaster is written from gridenginemaster.
    master=$(hostname)
    for p in gridengine-common gridengine-master gridengine-exec gridengine-client; do
        printf '%s shared/gridengineconfig boolean true\n' "$p"
        printf '%s shared/gridenginecell string default\n' "$p"
        printf '%s shared/gridenginemaster string %s\n' "$p" "$master"
    done | debconf-set-selections
fi

if [ "$what" = all ] || [ "$what" = ldap ]; then
    # slapd: no default database (ldap.sh runs its own slapd.conf and database); nslcd: the
    # postinst writes /etc/nslcd.conf, which ldap.sh never uses (it bind-mounts its own);
    # libnss-ldapd: leave /etc/nsswitch.conf alone (ldap.sh adds `ldap` on up, restores on down).
    debconf-set-selections <<'EOF'
slapd slapd/no_configuration boolean true
nslcd nslcd/ldap-uris string ldap://127.0.0.1:3389/
nslcd nslcd/ldap-base string dc=hpchub,dc=test
nslcd nslcd/ldap-auth-type select none
libnss-ldapd libnss-ldapd/nsswitch multiselect
libnss-ldapd libnss-ldapd/clean_nsswitch boolean false
EOF
fi

run_apt() {
    if ! "$@" >>"$log" 2>&1; then
        tail -n 30 "$log" >&2
        return 1
    fi
}

# apt-get update only if a package has no install candidate (no or stale lists).
need_update=
for p in $todo; do
    cand=$(apt-cache policy "$p" 2>/dev/null | awk '/Candidate:/ {print $2}')
    if [ -z "$cand" ] || [ "$cand" = "(none)" ]; then
        need_update=1
        break
    fi
done
if [ -n "$need_update" ]; then
    run_apt apt-get update || die "apt-get update failed"
fi

# shellcheck disable=SC2086
apt_install() { run_apt apt-get install -y --no-install-recommends $todo; }
if ! apt_install; then
    # Retry only a download failure (stale package lists: 404), never a
    # failed maintainer script: a second run could hide a half-done setup.
    if [ -z "$need_update" ] && grep -Eq 'Failed to fetch|Unable to fetch|404 +Not Found' "$log"; then
        run_apt apt-get update || die "apt-get update failed"
        apt_install || die "apt-get install failed: ${todo//$'\n'/ }"
    else
        die "apt-get install failed: ${todo//$'\n'/ }"
    fi
fi

left=$(missing)
[ -z "$left" ] || die "still not installed after apt-get: ${left//$'\n'/ }"
