#!/bin/bash
# Users and groups from LDAP for the hpchub tests: Debian's OpenLDAP slapd on loopback with its own
# config and database, and nslcd (libnss-ldapd) so that NSS (getent, id, sudo, the schedulers'
# daemons, hpchub) sees the LDAP users. Nothing of the packages' own configuration is used.
#
#   base dn   dc=hpchub,dc=test  (ou=people, ou=groups), ldap://127.0.0.1:3389/
#   users     dora (uid 20001), emil (uid 20002): posixAccount + shadowAccount, a password for the
#             hub login (LDAP simple bind), a user-private primary group, a home under /home,
#             subordinate uids and gids (/etc/subuid, /etc/subgid) for rootless podman
#   groups    course2026 (dora) and ldapusers (dora, emil): secondary groups (posixGroup memberUid)
#
# The host's files: `up` adds `ldap` after `files` for passwd and group in /etc/nsswitch.conf and
# `down` puts the file back byte for byte. nslcd reads the fixed path /etc/nslcd.conf: it runs in
# its own mount namespace with this script's config bind-mounted there, so the package's file is
# never changed. Local users never wait for LDAP: `files` answers them first, and nslcd skips the
# group lookups of local users (nss_initgroups_ignoreusers ALLLOCAL).
set -euo pipefail

PROG=ldap.sh
HERE=$(dirname "$(readlink -f "$0")")
. "$HERE/lib.sh"

usage() {
    cat >&2 <<EOF
usage: $PROG COMMAND
  up      start slapd and nslcd, load the users and groups, add ldap to /etc/nsswitch.conf
          (no-op when healthy)
  down    restore /etc/nsswitch.conf, stop nslcd, then slapd (the directory's data is kept)
  status  print what NSS says about dora and emil; exit 1 if LDAP is not up
users: dora (password $DORA_PASSWORD), emil (password $EMIL_PASSWORD)
EOF
    exit 2
}

STATE=$HPCHUB_CLUSTERS_STATE/ldap
PORT=3389
URI=ldap://127.0.0.1:$PORT/
BASE=dc=hpchub,dc=test
ADMIN_DN=cn=admin,$BASE
# The hub logins of the tests (tests/test_ldap.py); a test directory, not a secret.
DORA_PASSWORD=dora-ldap-2026
EMIL_PASSWORD=emil-ldap-2026
SLAPD_CONF=$STATE/slapd.conf
SLAPD_DB=$STATE/db
SLAPD_PID=$STATE/run/slapd.pid
SLAPD_LOG=$STATE/slapd.out
NSLCD_CONF=$STATE/nslcd.conf
NSLCD_PID=/run/nslcd/nslcd.pid # fixed by nslcd
NSLCD_LOG=$STATE/nslcd.out
NSSWITCH=/etc/nsswitch.conf
NSSWITCH_ORIG=$STATE/nsswitch.conf.orig # the host's file, as it was before `up`
NSSWITCH_OURS=$STATE/nsswitch.conf.ldap # what `up` wrote
STAMP=$STATE/data.sha256
UP_TIMEOUT=${HPCHUB_LDAP_UP_TIMEOUT:-20}

# user uid secondary-groups password
USERS=(
    "dora 20001 course2026,ldapusers $DORA_PASSWORD"
    "emil 20002 ldapusers $EMIL_PASSWORD"
)
# group gid
GROUPS_SECONDARY=("course2026 20100" "ldapusers 20101")

fail() {
    echo "$PROG: error: $*" >&2
    tail_logs "$SLAPD_LOG" "$NSLCD_LOG"
    exit 1
}

# ------------------------------------------------------------------ configs

write_slapd_conf() { # the admin's password hash is added by ensure_database
    cat <<EOF
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/nis.schema
include /etc/ldap/schema/inetorgperson.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile $SLAPD_PID
argsfile $STATE/run/slapd.args

database mdb
suffix "$BASE"
rootdn "$ADMIN_DN"
directory $SLAPD_DB
maxsize 104857600
index objectClass eq
index uid,uidNumber,gidNumber,memberUid,cn eq
# Passwords: only a bind may use them (the hub's LDAP authenticator binds as the user).
access to attrs=userPassword,shadowLastChange
    by self write
    by anonymous auth
    by * none
# nslcd reads the posix attributes anonymously.
access to *
    by * read
EOF
}

# The directory's entries; {PASSWORD:...} stands for the hash made when the data is loaded (a
# fresh salt each time: the stamp is taken over this text, not over the hashes).
write_ldif_template() {
    local entry user uid groups password group gid members
    cat <<EOF
dn: $BASE
objectClass: dcObject
objectClass: organization
dc: hpchub
o: hpchub test directory

dn: ou=people,$BASE
objectClass: organizationalUnit
ou: people

dn: ou=groups,$BASE
objectClass: organizationalUnit
ou: groups

EOF
    for entry in "${USERS[@]}"; do
        read -r user uid groups password <<<"$entry"
        cat <<EOF
dn: uid=$user,ou=people,$BASE
objectClass: inetOrgPerson
objectClass: posixAccount
objectClass: shadowAccount
uid: $user
cn: ${user^} Test
sn: Test
mail: $user@uni.example
uidNumber: $uid
gidNumber: $uid
homeDirectory: /home/$user
loginShell: /bin/bash
userPassword: {PASSWORD:$password}

dn: cn=$user,ou=groups,$BASE
objectClass: posixGroup
cn: $user
gidNumber: $uid

EOF
    done
    for entry in "${GROUPS_SECONDARY[@]}"; do
        read -r group gid <<<"$entry"
        echo "dn: cn=$group,ou=groups,$BASE"
        echo "objectClass: posixGroup"
        echo "cn: $group"
        echo "gidNumber: $gid"
        for entry in "${USERS[@]}"; do
            read -r user uid groups password <<<"$entry"
            [[ ",$groups," == *",$group,"* ]] && echo "memberUid: $user"
        done
        echo
    done
}

write_nslcd_conf() {
    cat <<EOF
# hpchub test LDAP (tests/clusters/ldap.sh); bind-mounted over /etc/nslcd.conf for nslcd only.
uid nslcd
gid nslcd
uri $URI
base $BASE
base passwd ou=people,$BASE
base shadow ou=people,$BASE
base group ou=groups,$BASE
# A slapd that is down must cost a lookup seconds, not minutes.
bind_timelimit 2
timelimit 5
reconnect_sleeptime 1
reconnect_retrytime 2
# Local users (alice, slurm, sgeadmin...) never wait for LDAP, not even for their group list.
nss_initgroups_ignoreusers ALLLOCAL
# Like SSSD's default: hpchub must find a user's groups without listing all (os.getgrouplist).
nss_disable_enumeration yes
EOF
}

data_hash() {
    { write_slapd_conf; write_ldif_template; write_nslcd_conf; } | sha256sum | awk '{print $1}'
}

# --------------------------------------------------------------- slapd

slapd_alive() { pidfile_alive "$SLAPD_PID" slapd; }

slapd_answers() {
    ldapsearch -x -LLL -H "$URI" -b "$BASE" -s base dn >/dev/null 2>&1
}

# A local user or group of the same name or id would shadow the LDAP one (files come first).
check_no_local_clash() {
    local entry user uid groups password group gid
    for entry in "${USERS[@]}"; do
        read -r user uid groups password <<<"$entry"
        ! grep -qE "^$user:|^[^:]*:[^:]*:$uid:" /etc/passwd || die "/etc/passwd already has $user or uid $uid"
        ! grep -qE "^$user:|^[^:]*:[^:]*:$uid:" /etc/group || die "/etc/group already has $user or gid $uid"
    done
    for entry in "${GROUPS_SECONDARY[@]}"; do
        read -r group gid <<<"$entry"
        ! grep -qE "^$group:|^[^:]*:[^:]*:$gid:" /etc/group || die "/etc/group already has $group or gid $gid"
    done
}

# Load the data into a new database when it is missing or its description changed (offline:
# slapadd, with slapd stopped).
ensure_database() {
    local want ldif line password hash tmp
    want=$(data_hash)
    if [ -e "$SLAPD_DB/data.mdb" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$want" ] && [ -s "$SLAPD_CONF" ]; then
        return 0
    fi
    stop_pidfile "$SLAPD_PID" slapd 10
    install -d -m 0700 "$STATE/secret"
    [ -s "$STATE/secret/admin.pw" ] || (umask 077 && head -c 18 /dev/urandom | base64 >"$STATE/secret/admin.pw")
    tmp=$(mktemp "$STATE/slapd.conf.XXXXXX")
    { write_slapd_conf; echo "rootpw $(slappasswd -T "$STATE/secret/admin.pw" -h '{SSHA}')"; } >"$tmp"
    chown root:openldap "$tmp"
    chmod 0640 "$tmp"
    mv "$tmp" "$SLAPD_CONF"
    ldif=$STATE/secret/data.ldif
    : >"$ldif"
    while IFS= read -r line; do
        if [[ "$line" =~ ^userPassword:\ \{PASSWORD:(.*)\}$ ]]; then
            password=${BASH_REMATCH[1]}
            hash=$(slappasswd -h '{SSHA}' -s "$password")
            line="userPassword: $hash"
        fi
        printf '%s\n' "$line" >>"$ldif"
    done < <(write_ldif_template)
    rm -rf "$SLAPD_DB"
    install -d -o openldap -g openldap -m 0700 "$SLAPD_DB"
    slapadd -q -f "$SLAPD_CONF" -l "$ldif" >"$STATE/slapadd.out" 2>&1 || fail "slapadd failed: $(cat "$STATE/slapadd.out")"
    chown -R openldap:openldap "$SLAPD_DB"
    echo "$want" >"$STAMP"
}

start_slapd() {
    slapd_alive && slapd_answers && return 0
    stop_pidfile "$SLAPD_PID" slapd 10
    wait_until 10 port_free "$PORT" || fail "port $PORT is in use by something else"
    install -d -o openldap -g openldap -m 0755 "$STATE/run"
    # slapd forks; its log goes to syslog (none here) unless it runs in debug mode: -d 0 is
    # quiet but keeps it in the foreground, so setsid + & stands in for the fork.
    setsid slapd -d 0 -f "$SLAPD_CONF" -h "$URI" -u openldap -g openldap >>"$SLAPD_LOG" 2>&1 9>&- </dev/null &
    wait_until "$UP_TIMEOUT" slapd_answers || fail "slapd does not answer on $URI"
    wait_until 5 slapd_alive || fail "slapd wrote no pid file $SLAPD_PID"
}

# --------------------------------------------------------------- nslcd

nslcd_alive() { pidfile_alive "$NSLCD_PID" nslcd; }

nslcd_config_current() {
    [ -e "$STATE/nslcd.conf.sha256" ] &&
        [ "$(cat "$STATE/nslcd.conf.sha256")" = "$(write_nslcd_conf | sha256sum | awk '{print $1}')" ]
}

start_nslcd() {
    if nslcd_alive && nslcd_config_current; then return 0; fi
    stop_pidfile "$NSLCD_PID" nslcd 10
    write_nslcd_conf >"$NSLCD_CONF"
    chown root:nslcd "$NSLCD_CONF"
    chmod 0640 "$NSLCD_CONF"
    # Its own mount namespace: the bind mount over /etc/nslcd.conf is seen by nslcd alone.
    # nslcd -n stays in the foreground; /run/nslcd (socket, pid file) is the host's.
    install -d -o nslcd -g nslcd -m 0755 /run/nslcd
    setsid unshare --mount --propagation private \
        sh -c 'mount --bind "$1" /etc/nslcd.conf && exec nslcd -n' sh "$NSLCD_CONF" \
        >>"$NSLCD_LOG" 2>&1 9>&- </dev/null &
    wait_until "$UP_TIMEOUT" nslcd_alive || fail "nslcd is not running"
    write_nslcd_conf | sha256sum | awk '{print $1}' >"$STATE/nslcd.conf.sha256"
}

# ----------------------------------------------------------- nsswitch.conf

# The host's nsswitch.conf with `ldap` right after `files` on the passwd and group lines.
nsswitch_with_ldap() {
    awk '($1 == "passwd:" || $1 == "group:") && !/[[:space:]]ldap([[:space:]]|$)/ {
             match(substr($0, length($1) + 1), /^[[:space:]]*/)
             gap = substr($0, length($1) + 1, RLENGTH)
             line = ""; added = 0
             for (i = 2; i <= NF; i++) {
                 line = line (i > 2 ? " " : "") $i
                 if ($i == "files" && !added) { line = line " ldap"; added = 1 }
             }
             if (!added) line = line " ldap"
             $0 = $1 gap line
         }
         {print}' "$1"
}

nsswitch_has_ldap() {
    awk '$1 == "passwd:" && / ldap( |$)/ {p = 1} $1 == "group:" && / ldap( |$)/ {g = 1} END {exit !(p && g)}' \
        "$NSSWITCH"
}

# replace_file SOURCE TARGET: TARGET gets SOURCE's bytes, mode and owner at once (a rename), so no
# lookup ever reads half a file.
replace_file() {
    local tmp
    tmp=$(mktemp "$2.hpchub.XXXXXX")
    cp --preserve=mode,ownership "$1" "$tmp"
    mv -f "$tmp" "$2"
}

nsswitch_add_ldap() {
    nsswitch_has_ldap && [ -e "$NSSWITCH_ORIG" ] && return 0
    if [ ! -e "$NSSWITCH_ORIG" ]; then
        cp --preserve=mode,ownership,timestamps "$NSSWITCH" "$NSSWITCH_ORIG"
    fi
    nsswitch_with_ldap "$NSSWITCH_ORIG" >"$NSSWITCH_OURS"
    chmod --reference="$NSSWITCH_ORIG" "$NSSWITCH_OURS"
    chown --reference="$NSSWITCH_ORIG" "$NSSWITCH_OURS"
    replace_file "$NSSWITCH_OURS" "$NSSWITCH"
}

nsswitch_restore() {
    [ -e "$NSSWITCH_ORIG" ] || return 0
    if [ -e "$NSSWITCH_OURS" ] && ! cmp -s "$NSSWITCH" "$NSSWITCH_OURS"; then
        warn "$NSSWITCH changed while LDAP was up; restoring the copy taken at 'up' (now: $STATE/nsswitch.conf.changed)"
        cp -p "$NSSWITCH" "$STATE/nsswitch.conf.changed"
    fi
    replace_file "$NSSWITCH_ORIG" "$NSSWITCH"
    touch -r "$NSSWITCH_ORIG" "$NSSWITCH"
    cmp -s "$NSSWITCH_ORIG" "$NSSWITCH" || die "could not restore $NSSWITCH from $NSSWITCH_ORIG"
    rm -f "$NSSWITCH_ORIG" "$NSSWITCH_OURS"
}

# ---------------------------------------------------------------- users

user_resolves() { [ "$(id -u "$1" 2>/dev/null)" = "$2" ]; }

ensure_users() {
    local entry user uid groups password got
    for entry in "${USERS[@]}"; do
        read -r user uid groups password <<<"$entry"
        wait_until 10 user_resolves "$user" "$uid" || fail "NSS does not resolve $user to uid $uid: $(id "$user" 2>&1)"
        got=$(id -Gn "$user" | tr ' ' '\n' | sort | paste -sd,)
        [ "$got" = "$(printf '%s\n' "$user" ${groups//,/ } | sort | paste -sd,)" ] ||
            fail "$user's groups through NSS are '$got', expected $user,$groups"
        if [ ! -d "/home/$user" ]; then
            install -d -o "$uid" -g "$uid" -m 0755 "/home/$user"
        fi
        got=$(sudo -n -u "$user" id -un 2>&1) && [ "$got" = "$user" ] ||
            fail "root cannot run commands as $user with sudo: $got"
    done
}

# ---------------------------------------------------------------- commands

healthy() {
    slapd_alive && nslcd_alive && nslcd_config_current && nsswitch_has_ldap || return 1
    [ "$(cat "$STAMP" 2>/dev/null)" = "$(data_hash)" ] || return 1
    slapd_answers && user_resolves dora 20001 && user_resolves emil 20002
}

summary() { echo "ldap: up ($URI, base $BASE; users dora, emil through nslcd)"; }

cmd_up() {
    local entry
    # Their jobs run rootless podman too (tests/clusters/containers.sh); useradd never saw them.
    for entry in "${USERS[@]}"; do ensure_subids "${entry%% *}"; done
    if healthy; then
        summary
        return 0
    fi
    need_cmds slapd slapadd slappasswd ldapsearch nslcd unshare sudo cmp
    install -d -m 0755 "$STATE"
    check_no_local_clash
    ensure_database
    start_slapd
    start_nslcd
    nsswitch_add_ldap
    ensure_users
    summary
}

cmd_down() {
    # nsswitch first: from then on no lookup goes to nslcd; then nslcd before slapd (an nslcd
    # whose server is gone makes each lookup wait for its timeouts).
    nsswitch_restore
    stop_pidfile "$NSLCD_PID" nslcd 10
    stop_pidfile "$SLAPD_PID" slapd 10
}

cmd_status() {
    local rc=0 user
    healthy || rc=1
    for user in dora emil; do
        getent passwd "$user" || rc=1
        id "$user" 2>&1 || rc=1
    done
    [ "$rc" -eq 0 ] || echo "ldap: NOT up (run: $0 up)" >&2
    return "$rc"
}

[ $# -eq 1 ] || usage
case "$1" in
    up | down | status) ;;
    *) usage ;;
esac

need_root
case "$1" in
    up) take_lock ldap && cmd_up ;;
    down) take_lock ldap && cmd_down ;;
    status) cmd_status ;;
esac
