#!/bin/bash
# A real login node for the hpchub SSH tests: Debian's sshd in its own network
# namespace (hpchub-login, 10.77.0.20 on the Slurm bridge hpchub-br0), with its
# own hostname "login" and /etc/hosts (a private mount namespace), in front of
# the local multi-node Slurm cluster and Grid Engine (a submit host there).
#
# Test accounts: alice, bob, carol with one ed25519 key each, and the service
# account hpchub-svc, which may `sudo -n -u alice|bob|carol` only the commands
# a hub needs (hpchub-job, scancel, qdel). Files for the tests:
#   /var/lib/hpchub-test/keys/USER.key          private keys (root only)
#   /var/lib/hpchub-test/known_hosts            the login node's host key
#   /var/lib/hpchub-test/known_hosts.wrong      the same host with another key
#   /var/lib/hpchub-test/login/sshd.log         sshd's log (LogLevel VERBOSE)
# The host's own /etc/ssh is never read or written. The host's /etc/hosts gets
# one marked line "10.77.0.20 login" (Grid Engine resolves its clients there).
set -euo pipefail

PROG=login.sh
HERE=$(dirname "$(readlink -f "$0")")
. "$HERE/lib.sh"

usage() {
    cat >&2 <<EOF
usage: $PROG COMMAND
  up      start the login node (and Slurm/Grid Engine first if they are not up);
          check ssh + squeue/qstat/sbatch through it (no-op when healthy)
  down    stop sshd and its sessions, remove the namespace, keys, known_hosts,
          sudoers file, the Grid Engine submit host and the /etc/hosts line
  status  check the login node as 'up' does; exit 1 if it is not up
  cut     take the login node off the network (its veth link down): open
          connections hang as with a node that is gone; sshd keeps running
  mend    put it back (link up)
  serve   container role (docker-compose.test.yml): this container is the login
          node, a Slurm client of HPCHUB_SLURM_CONTROLLER (munge key
          HPCHUB_MUNGE_KEY); sshd in the foreground on the container's address
environment:
  HPCHUB_TEST_STATE=DIR   keys, known_hosts and the login node's state (default /var/lib/hpchub-test)
EOF
    exit 2
}

TEST_STATE=${HPCHUB_TEST_STATE:-/var/lib/hpchub-test}
STATE=$TEST_STATE/login
KEYS=$TEST_STATE/keys
KNOWN_HOSTS=$TEST_STATE/known_hosts
WRONG_KNOWN_HOSTS=$TEST_STATE/known_hosts.wrong
SSHD_CONF=$STATE/sshd_config
SSHD_PID=$STATE/sshd.pid
SSHD_LOG=$STATE/sshd.log
HOST_KEY=$STATE/ssh_host_ed25519_key
HOSTS=$STATE/hosts
SUBMIT_HOST_STAMP=$STATE/sge-submit-host # present: this script made "login" an SGE submit host
SUDOERS=/etc/sudoers.d/hpchub-svc-test

NS=hpchub-login
VETH=hpchub-vlogin
BRIDGE=hpchub-br0
NET_PREFIX=10.77.0
HEAD_ADDR=$NET_PREFIX.1
ADDR=$NET_PREFIX.20
MAC=02:77:00:00:00:20 # locally administered
NAME=login
KNOWN_AS=$ADDR # the host field of the known_hosts line
HEAD=$(hostname -s)
USERS=(alice bob carol)
SVC=hpchub-svc
KEY_COMMENT=hpchub-test-login # marks the keys this script put in authorized_keys
HOSTS_MARK="# hpchub-test login node"
JOB_HELPER=/opt/hpchub/venv/bin/hpchub-job
SLURM_HOSTS=$HPCHUB_CLUSTERS_STATE/slurm/hosts

export SGE_ROOT=${SGE_ROOT:-/var/lib/gridengine}
export SGE_CELL=${SGE_CELL:-default}

# ---------------------------------------------------------------- helpers

fail() {
    echo "$PROG: error: $*" >&2
    tail_logs "$SSHD_LOG" "$STATE/sshd.out"
    exit 1
}

# in_ns CMD...: run CMD in the login node's network namespace with its own
# hostname and /etc/hosts (new mount and UTS namespaces, as slurm.sh does for
# the compute nodes).
in_ns() {
    nsenter --net="/run/netns/$NS" unshare --mount --uts --propagation private \
        sh -c 'mount --bind "$0" /etc/hosts && hostname "$1" && shift && exec "$@"' \
        "$HOSTS" "$NAME" "$@"
}

# ssh_as USER CMD...: run CMD on the login node as USER with the system client.
ssh_as() {
    local user=$1
    shift
    ssh -n -F none -i "$KEYS/$user.key" -o IdentitiesOnly=yes -o BatchMode=yes \
        -o UserKnownHostsFile="$KNOWN_HOSTS" -o GlobalKnownHostsFile=/dev/null \
        -o StrictHostKeyChecking=yes -o ControlMaster=no -o ControlPath=none \
        -o ConnectTimeout=10 "$user@$ADDR" "$@"
}

sshd_alive() { pidfile_alive "$SSHD_PID" sshd; }
sshd_listening() { nsenter --net="/run/netns/$NS" ss -Hltn "src $ADDR:22" 2>/dev/null | grep -q .; }

# -------------------------------------------------------------- accounts

ensure_service_account() {
    if ! getent passwd "$SVC" >/dev/null; then
        useradd --system --create-home --home-dir "/home/$SVC" --shell /bin/bash \
            --user-group "$SVC" || die "useradd $SVC failed"
    fi
    # Locked ("!") accounts are refused by sshd without PAM; "*" allows key login only.
    [ "$(getent shadow "$SVC" | cut -d: -f2)" = '*' ] || usermod -p '*' "$SVC"
}

# ensure_key USER: a key pair in $KEYS, its public half once in ~USER/.ssh/authorized_keys.
ensure_key() {
    local user=$1 pub
    if [ ! -s "$KEYS/$user.key" ] || [ ! -s "$KEYS/$user.key.pub" ]; then
        rm -f "$KEYS/$user.key" "$KEYS/$user.key.pub"
        ssh-keygen -q -t ed25519 -N '' -C "$KEY_COMMENT:$user" -f "$KEYS/$user.key" ||
            die "ssh-keygen for $user failed"
    fi
    pub=$(cat "$KEYS/$user.key.pub")
    # As the user, so that ~/.ssh and the file are theirs with the modes sshd wants.
    runuser -u "$user" -- sh -c '
        umask 077
        mkdir -p "$HOME/.ssh" && chmod 700 "$HOME/.ssh"
        touch "$HOME/.ssh/authorized_keys" && chmod 600 "$HOME/.ssh/authorized_keys"
        grep -qxF -- "$1" "$HOME/.ssh/authorized_keys" || printf "%s\n" "$1" >>"$HOME/.ssh/authorized_keys"
    ' sh "$pub" || die "cannot install the key of $user in its authorized_keys"
}

# remove_key USER: drop the lines this script added to ~USER/.ssh/authorized_keys.
remove_key() {
    local user=$1
    getent passwd "$user" >/dev/null || return 0
    runuser -u "$user" -- sh -c '
        f=$HOME/.ssh/authorized_keys
        [ -f "$f" ] && grep -q " $1:" "$f" || exit 0
        grep -v " $1:" "$f" >"$f.tmp" || true
        chmod 600 "$f.tmp" && mv -f "$f.tmp" "$f"
    ' sh "$KEY_COMMENT" || warn "could not clean the authorized_keys of $user"
}

sudoers_text() {
    local users
    users=$(IFS=,; echo "${USERS[*]}")
    cat <<EOF
# Written by tests/clusters/login.sh (hpchub test login node); removed by 'login.sh down'.
# The hub's service account may run, as a test user, only what a hub runs for it.
Defaults:$SVC !requiretty
$SVC ALL=($users) NOPASSWD: $JOB_HELPER, /usr/bin/scancel, /usr/bin/qdel
EOF
}

ensure_sudoers() {
    local want tmp
    want=$(sudoers_text)
    [ -f "$SUDOERS" ] && [ "$(cat "$SUDOERS")" = "$want" ] && return 0
    tmp=$(mktemp "$STATE/sudoers.XXXXXX")
    printf '%s\n' "$want" >"$tmp"
    visudo -cqf "$tmp" || { rm -f "$tmp"; die "sudoers text for $SVC does not parse"; }
    chmod 0440 "$tmp"
    mv -f "$tmp" "$SUDOERS"
}

# -------------------------------------------------------------- network

hosts_text() {
    local f
    echo "127.0.0.1 localhost"
    echo "::1 localhost ip6-localhost ip6-loopback"
    echo "$ADDR $NAME"
    echo "$HEAD_ADDR $HEAD"
    # The compute nodes, as slurm.sh names them.
    for f in "$SLURM_HOSTS"/node*; do
        [ -e "$f" ] && awk -v n="${f##*/}" '$2 == n' "$f"
    done
    return 0
}

net_up() {
    ip link show "$BRIDGE" >/dev/null 2>&1 ||
        die "bridge $BRIDGE is missing: Slurm is not up (run tests/clusters/slurm.sh up)"
    [ -e "/run/netns/$NS" ] || ip netns add "$NS" || die "cannot create netns $NS"
    if ! ip link show "$VETH" >/dev/null 2>&1; then
        ip -n "$NS" link del eth0 >/dev/null 2>&1 || true
        ip link add "$VETH" type veth peer name eth0 netns "$NS" || die "cannot create veth $VETH"
    fi
    ip link set "$VETH" master "$BRIDGE"
    ip link set "$VETH" up
    ip -n "$NS" link set lo up
    # A fixed MAC address: after down + up, the host's (and the nodes') ARP entry for
    # $ADDR still names the old one for up to ~30 s, and connections time out.
    ip -n "$NS" link set eth0 address "$MAC"
    ip -n "$NS" addr replace "$ADDR/24" dev eth0
    ip -n "$NS" link set eth0 up
    # No default route: like a compute node, the login node reaches only the bridge network.
    local want
    want=$(hosts_text)
    [ "$(cat "$HOSTS" 2>/dev/null)" = "$want" ] || printf '%s\n' "$want" >"$HOSTS"
}

net_down() {
    ip link del "$VETH" >/dev/null 2>&1 || true
    ip netns del "$NS" >/dev/null 2>&1 || true
    ip neigh del "$ADDR" dev "$BRIDGE" >/dev/null 2>&1 || true
}

# ---------------------------------------------------------- Grid Engine

# qmaster names a client by the reverse lookup of its address (in the host's
# /etc/hosts) and refuses it unless that is the client's own host name: the
# host needs "10.77.0.20 login". The line is edited in place (the file may be
# a bind mount) and removed by 'down'.
ensure_host_entry() {
    grep -qxF "$ADDR $NAME $HOSTS_MARK" /etc/hosts && return 0
    printf '%s\n' "$ADDR $NAME $HOSTS_MARK" >>/etc/hosts
}

remove_host_entry() {
    local kept
    grep -qF "$HOSTS_MARK" /etc/hosts || return 0
    kept=$(grep -vF "$HOSTS_MARK" /etc/hosts || true)
    printf '%s\n' "$kept" >/etc/hosts
}

sge_up() { qconf -sss >/dev/null 2>&1; }

ensure_submit_host() {
    qconf -ss 2>/dev/null | grep -qxF "$NAME" && return 0
    qconf -as "$NAME" >/dev/null 2>&1 || fail "qconf -as $NAME failed: $(qconf -as "$NAME" 2>&1)"
    touch "$SUBMIT_HOST_STAMP"
}

remove_submit_host() {
    [ -e "$SUBMIT_HOST_STAMP" ] || return 0
    if sge_up && qconf -ss 2>/dev/null | grep -qxF "$NAME"; then
        qconf -ds "$NAME" >/dev/null 2>&1 || warn "qconf -ds $NAME failed"
    fi
    rm -f "$SUBMIT_HOST_STAMP"
}

# ------------------------------------------------------------------ sshd

sshd_conf_text() {
    cat <<EOF
# Written by tests/clusters/login.sh -- the hpchub test login node. Do not edit.
ListenAddress $ADDR:22
HostKey $HOST_KEY
PidFile $SSHD_PID
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AuthenticationMethods publickey
PermitRootLogin no
AllowUsers ${USERS[*]} $SVC
AuthorizedKeysFile .ssh/authorized_keys
StrictModes yes
AllowTcpForwarding yes
# OpenSSH's default, as on a real login node: a pooled connection gets at most
# 10 channels (exec, sftp, direct-tcpip) open at once.
MaxSessions 10
X11Forwarding no
PrintMotd no
LogLevel VERBOSE
Subsystem sftp internal-sftp
# As the docs advise (docs/hub-off-cluster.md): only the hub's query account (to_hub: reverse) may open a
# port on the login node's address; the users' own remote forwards stay on loopback.
# A Match block lasts to the end of the file.
Match User $SVC
    GatewayPorts clientspecified
EOF
}

# True when the config changed (a running sshd must be restarted to read it).
ensure_sshd_files() {
    local want changed=1
    if [ ! -s "$HOST_KEY" ]; then
        rm -f "$HOST_KEY" "$HOST_KEY.pub"
        ssh-keygen -q -t ed25519 -N '' -C "$NAME" -f "$HOST_KEY" || die "ssh-keygen (host key) failed"
    fi
    want=$(sshd_conf_text)
    if [ "$(cat "$SSHD_CONF" 2>/dev/null)" != "$want" ]; then
        printf '%s\n' "$want" >"$SSHD_CONF"
        changed=0
    fi
    install -d -m 0755 /run/sshd # privilege separation directory (Debian's path)
    /usr/sbin/sshd -t -f "$SSHD_CONF" || die "sshd -t rejects $SSHD_CONF"
    # The client side: the right key, and the same host name with a key it does not have.
    printf '%s %s\n' "$KNOWN_AS" "$(cut -d' ' -f1,2 "$HOST_KEY.pub")" >"$KNOWN_HOSTS.tmp"
    mv -f "$KNOWN_HOSTS.tmp" "$KNOWN_HOSTS"
    if [ ! -s "$STATE/wrong_host_key.pub" ]; then
        rm -f "$STATE/wrong_host_key" "$STATE/wrong_host_key.pub"
        ssh-keygen -q -t ed25519 -N '' -C wrong -f "$STATE/wrong_host_key" || die "ssh-keygen failed"
    fi
    printf '%s %s\n' "$KNOWN_AS" "$(cut -d' ' -f1,2 "$STATE/wrong_host_key.pub")" >"$WRONG_KNOWN_HOSTS"
    chmod 0644 "$KNOWN_HOSTS" "$WRONG_KNOWN_HOSTS"
    return "$changed"
}

start_sshd() {
    sshd_alive && return 0
    rm -f "$SSHD_PID"
    install -d -m 0755 /run/sshd
    touch "$SSHD_LOG"
    chmod 0640 "$SSHD_LOG"
    # sshd forks into the background; it and every session stay in these namespaces.
    in_ns /usr/sbin/sshd -f "$SSHD_CONF" -E "$SSHD_LOG" >>"$STATE/sshd.out" 2>&1 9>&- ||
        fail "sshd failed to start"
    wait_until 10 sshd_listening || fail "sshd does not listen on $ADDR:22"
}

# Stop sshd, then what runs in the namespace: its sessions and their commands.
stop_sshd() {
    local pid
    stop_pidfile "$SSHD_PID" sshd 10
    [ -e "/run/netns/$NS" ] || return 0
    for pid in $(ip netns pids "$NS" 2>/dev/null); do
        kill -TERM "$pid" 2>/dev/null || true
    done
    wait_until 10 ns_empty || for pid in $(ip netns pids "$NS" 2>/dev/null); do
        kill -KILL "$pid" 2>/dev/null || true
    done
}

ns_empty() { [ -z "$(ip netns pids "$NS" 2>/dev/null)" ]; }

# ---------------------------------------------------------------- checks

# check: print what failed and return 1; quiet when everything works.
check() {
    local out rc=0 u
    [ -e "/run/netns/$NS" ] || { echo "no network namespace $NS" >&2; return 1; }
    sshd_alive || { echo "sshd is not running" >&2; return 1; }
    [ -f "$SUDOERS" ] || { echo "no $SUDOERS" >&2; rc=1; }
    for u in "${USERS[@]}" "$SVC"; do
        [ -s "$KEYS/$u.key" ] || { echo "no key $KEYS/$u.key" >&2; rc=1; }
    done
    out=$(ssh_as alice hostname 2>&1) && [ "$out" = "$NAME" ] ||
        { echo "ssh alice@$ADDR hostname: $out" >&2; return 1; }
    out=$(ssh_as alice squeue --noheader 2>&1) || { echo "squeue on $NAME: $out" >&2; rc=1; }
    out=$(ssh_as alice qstat 2>&1) || { echo "qstat on $NAME: $out" >&2; rc=1; }
    # --test-only: slurmctld checks the job against partition multi; nothing is submitted.
    out=$(ssh_as alice sbatch --test-only -p multi -N1 -t 1 --wrap true 2>&1) &&
        [[ "$out" == *"to start at"* ]] ||
        { echo "sbatch --test-only -p multi on $NAME: $out" >&2; rc=1; }
    return "$rc"
}

# The service account, every account's key, the sudoers file.
ensure_accounts() {
    local u
    install -d -m 0755 "$TEST_STATE" "$STATE"
    install -d -m 0700 "$KEYS"
    ensure_service_account
    for u in "${USERS[@]}" "$SVC"; do ensure_key "$u"; done
    ensure_sudoers
}

summary() { echo "login: up (sshd on $ADDR:22, host $NAME; keys in $KEYS, known_hosts $KNOWN_HOSTS)"; }

# ---------------------------------------------------------------- commands

cmd_up() {
    local restart=
    if [ -e "$SSHD_CONF" ] && [ "$(cat "$SSHD_CONF")" = "$(sshd_conf_text)" ] &&
        [ "$(cat "$HOSTS" 2>/dev/null)" = "$(hosts_text)" ] && check 2>/dev/null; then
        summary
        return 0
    fi
    need_cmds sshd ssh ssh-keygen ip nsenter unshare runuser useradd usermod visudo sudo qconf sbatch
    [ -x /usr/sbin/sshd ] || die "/usr/sbin/sshd missing (run install-packages.sh)"
    bash "$HERE/slurm.sh" status >/dev/null 2>&1 || bash "$HERE/slurm.sh" up ||
        die "Slurm is not up and 'slurm.sh up' failed: the login node needs its bridge $BRIDGE"
    bash "$HERE/sge.sh" status >/dev/null 2>&1 || bash "$HERE/sge.sh" up ||
        die "Grid Engine is not up and 'sge.sh up' failed"
    bash "$HERE/users.sh"
    ensure_accounts
    ensure_host_entry
    ensure_submit_host
    net_up
    if ensure_sshd_files; then restart=1; fi
    if [ -n "$restart" ] || [ "$(cat "$STATE/hosts.started" 2>/dev/null)" != "$(cat "$HOSTS")" ]; then
        stop_sshd # a running sshd keeps its old config and /etc/hosts
    fi
    cp -f "$HOSTS" "$STATE/hosts.started"
    start_sshd
    check || fail "the login node is up but does not work (see above)"
    summary
}

cmd_down() {
    local u
    stop_sshd
    net_down
    rm -f "$SUDOERS"
    remove_submit_host
    remove_host_entry
    for u in "${USERS[@]}" "$SVC"; do remove_key "$u"; done
    # The service account stays, like the test users (locked out: no key left).
    rm -rf "$KEYS" "$STATE"
    rm -f "$KNOWN_HOSTS" "$WRONG_KNOWN_HOSTS"
}

cmd_status() {
    if check; then
        summary
        return 0
    fi
    echo "login: NOT up (run: $0 up)" >&2
    return 1
}

cmd_serve() {
    [ -n "${HPCHUB_SLURM_CONTROLLER:-}" ] || die "set HPCHUB_SLURM_CONTROLLER (the Slurm controller's hostname)"
    need_cmds ssh-keygen runuser useradd usermod visudo sudo
    ADDR=$(hostname -i | awk '{print $1}')
    NAME=$(hostname)
    KNOWN_AS=$NAME,$ADDR
    [ -n "$ADDR" ] || die "cannot find this container's address (hostname -i)"
    bash "$HERE/slurm.sh" client
    ensure_accounts
    ensure_sshd_files || true
    echo "login: sshd on $ADDR:22 (host $NAME); keys in $KEYS, known_hosts $KNOWN_HOSTS"
    exec /usr/sbin/sshd -D -e -f "$SSHD_CONF"
}

cmd_link() {
    ip link show "$VETH" >/dev/null 2>&1 || die "no link $VETH: the login node is not up"
    ip link set "$VETH" "$1"
}

[ $# -eq 1 ] || usage
case "$1" in
    up | down | status | serve | cut | mend) ;;
    *) usage ;;
esac

need_root
case "$1" in
    up) take_lock login && cmd_up ;;
    down) take_lock login && cmd_down ;;
    status) cmd_status ;;
    serve) cmd_serve ;;
    cut) cmd_link down ;;
    mend) cmd_link up ;;
esac
