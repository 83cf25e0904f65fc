#!/bin/bash
# The container image of the hpchub tests, built offline from the registries this machine already
# uses (Debian's apt sources for the root, pip's index for Python): a Debian bookworm root with a
# venv /opt/lab holding JupyterHub 5.x (not the hub's 6.x), JupyterLab 4 and ipyparallel, and
# nothing of hpchub. The file /etc/hpchub-test-image (MARK below) exists only in the image, so a
# test can tell that a process runs inside it.
#
# It is stored as an OCI archive that every user can read (podman's `oci-archive:` transport, or
# `podman load -i`), with a file naming the image inside it and a stamp of the inputs (this script,
# which holds the versions): `build` does nothing while the stamp matches.
#
#   $DIR/hpchub-test-lab.oci.tar   the OCI archive (mode 644)
#   $DIR/hpchub-test-lab.ref       the image's name in the archive, localhost/hpchub-test-lab:TAG
#                                  (TAG from the stamp, so a rebuilt image never meets a stale copy
#                                  of the old one in a user's storage)
#   $DIR/hpchub-test-lab.stamp     sha256 of the inputs
set -euo pipefail

PROG=image.sh
HERE=$(dirname "$(readlink -f "$0")")
. "$HERE/lib.sh"

DIR=${HPCHUB_TEST_IMAGES:-/var/lib/hpchub-test/images}
NAME=hpchub-test-lab
ARCHIVE=$DIR/$NAME.oci.tar
REF_FILE=$DIR/$NAME.ref
STAMP_FILE=$DIR/$NAME.stamp
SUITE=bookworm
# What the image holds: the versions are inputs of the stamp (they are in this file).
PACKAGES=python3,python3-venv,ca-certificates
PIP_REQUIREMENTS=(jupyterhub==5.5.4 jupyterlab==4.6.6 ipyparallel==9.2.0 jupyter-collaboration==5.0.4 jupytext==1.19.7)
VENV=/opt/lab
MARK="hpchub test image: Debian bookworm, jupyterhub 5.5.4, jupyterlab 4.6.6, ipyparallel 9.2.0, jupyter-collaboration 5.0.4, jupytext 1.19.7, no hpchub"

usage() {
    cat >&2 <<EOF
usage: $PROG COMMAND
  build    build the image unless the archive matches this script (the stamp); prints its name
  status   print the archive, its image name and size; exit 1 if missing or out of date
  remove   delete the archive and its files (the next build starts from nothing)
environment:
  HPCHUB_TEST_IMAGES=DIR   where the archive lives (default /var/lib/hpchub-test/images)
EOF
    exit 2
}

stamp() {
    {
        cat "$HERE/image.sh"
        echo "$SUITE"
    } | sha256sum | cut -c1-64
}

up_to_date() {
    [ -s "$ARCHIVE" ] && [ -s "$REF_FILE" ] && [ "$(cat "$STAMP_FILE" 2>/dev/null)" = "$(stamp)" ]
}

# The apt sources of this machine (a mirror configured here is used for the image too).
apt_sources() {
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [ -s "$f" ] && echo "$f"
    done
    return 0
}

# Runs inside mmdebstrap's customize hook, $1 = the new root (mmdebstrap has mounted /proc and
# /dev in it). pip reaches the index the way it does on this machine: DNS, this machine's CA
# bundle (a proxy's CA included) and the site-wide /etc/pip.conf are copied in for the install
# and taken out again; of pip's environment only the index settings pass (this machine's
# find-links and file:// indexes are local directories the chroot cannot see).
customize() {
    local root=$1 v envs=()
    mv "$root/etc/ssl/certs/ca-certificates.crt" "$root/ca-certificates.crt.image"
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
    cp --remove-destination /etc/resolv.conf "$root/etc/resolv.conf"
    [ ! -f /etc/pip.conf ] || cp /etc/pip.conf "$root/etc/pip.conf"
    for v in PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_TRUSTED_HOST PIP_DEFAULT_TIMEOUT PIP_PROXY \
        http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
        [ -z "${!v:-}" ] || [[ "${!v}" == file:* ]] || envs+=("$v=${!v}")
    done
    chroot "$root" env -i PATH=/usr/bin:/bin HOME=/root LANG=C.UTF-8 \
        PIP_CERT=/etc/ssl/certs/ca-certificates.crt PIP_NO_CACHE_DIR=1 \
        PIP_DISABLE_PIP_VERSION_CHECK=1 "${envs[@]}" \
        sh -ec "python3 -m venv $VENV && $VENV/bin/pip install -q ${PIP_REQUIREMENTS[*]}"
    # No hpchub may come in through a dependency: the tests rely on its absence.
    if chroot "$root" $VENV/bin/python -c 'import hpchub' 2>/dev/null; then
        echo "$PROG: hpchub is importable in the image" >&2
        return 1
    fi
    # mmdebstrap sets the mtime of every file the hook wrote to its own start time (SOURCE_DATE_EPOCH)
    # after pip compiled the venv's bytecode against the real mtimes: every .pyc would be stale, and
    # each server start would compile its modules again in memory (the image is read-only to its
    # users), about 1.5 s of CPU (bench/container.py). Bytecode checked by the source's hash does not
    # depend on mtimes. (compileall exits 1 for a file it cannot compile, as pip ignores those.)
    chroot "$root" $VENV/bin/python -m compileall -q -f --invalidation-mode checked-hash $VENV/lib >/dev/null || true
    mv "$root/ca-certificates.crt.image" "$root/etc/ssl/certs/ca-certificates.crt"
    rm -f "$root/etc/pip.conf"
    : >"$root/etc/resolv.conf" # podman writes the container's own
    printf '%s\n' "$MARK" >"$root/etc/hpchub-test-image"
    # Every user runs it as themselves (--userns keep-id): / must be searchable by all.
    chmod 0755 "$root"
}

cmd_build() {
    local work tag ref t0 out
    if up_to_date; then
        cat "$REF_FILE"
        return 0
    fi
    need_cmds mmdebstrap podman sha256sum
    t0=$SECONDS
    install -d -m 0755 "$DIR"
    work=$(mktemp -d "$DIR/build.XXXXXX")
    # shellcheck disable=SC2064
    trap "rm -rf '$work'" EXIT
    tag=$(stamp | cut -c1-12)
    ref=localhost/$NAME:$tag
    # mmdebstrap reads sources from stdin unless it is a terminal: give it the files and no stdin.
    # shellcheck disable=SC2046
    if ! out=$(mmdebstrap --variant=apt --include="$PACKAGES" --format=tar \
        --customize-hook="$HERE/image.sh customize \"\$1\"" \
        "$SUITE" "$work/root.tar" $(apt_sources) </dev/null 2>&1); then
        printf '%s\n' "$out" | tail -n 30 >&2
        die "mmdebstrap failed"
    fi
    # Import and save in a throwaway store: root's own podman storage is left alone.
    local pod=(podman --root "$work/storage" --runroot "$work/run" --storage-driver vfs)
    "${pod[@]}" import --quiet --change "ENV PATH=$VENV/bin:/usr/local/bin:/usr/bin:/bin" \
        --change 'ENV LANG=C.UTF-8' --message "$MARK" "$work/root.tar" "$ref" >/dev/null ||
        die "podman import failed"
    "${pod[@]}" save --quiet --format oci-archive -o "$work/image.tar" "$ref" ||
        die "podman save failed"
    chmod 0644 "$work/image.tar"
    mv -f "$work/image.tar" "$ARCHIVE"
    printf '%s\n' "$ref" >"$REF_FILE.tmp" && mv -f "$REF_FILE.tmp" "$REF_FILE"
    stamp >"$STAMP_FILE.tmp" && mv -f "$STAMP_FILE.tmp" "$STAMP_FILE"
    chmod 0644 "$REF_FILE" "$STAMP_FILE"
    echo "$PROG: built $ref in $((SECONDS - t0)) s ($(du -h "$ARCHIVE" | cut -f1)): $ARCHIVE" >&2
    echo "$ref"
}

cmd_status() {
    if up_to_date; then
        echo "image: $(cat "$REF_FILE") in $ARCHIVE ($(du -h "$ARCHIVE" | cut -f1))"
        return 0
    fi
    if [ -s "$ARCHIVE" ]; then
        echo "image: $ARCHIVE is out of date (run: $0 build)" >&2
    else
        echo "image: NOT built (run: $0 build)" >&2
    fi
    return 1
}

[ $# -ge 1 ] || usage
cmd=$1
shift
case "$cmd" in
    build | status | remove) [ $# -eq 0 ] || usage ;;
    customize) [ $# -eq 1 ] || usage ;; # mmdebstrap's hook (see cmd_build), not for people
    *) usage ;;
esac

case "$cmd" in
    build) need_root && take_lock image && cmd_build ;;
    status) cmd_status ;;
    remove) need_root && take_lock image && rm -f "$ARCHIVE" "$REF_FILE" "$STAMP_FILE" ;;
    customize) customize "$1" ;;
esac
