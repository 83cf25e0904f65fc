# hpchub's start of a server job's single-user server, run by the job script on the node or inside
# the job's container (it travels in the job's bundle, hpchub.core.bundle):
#
#     /bin/sh start-server.sh jupyterhub-singleuser ARGS...
#
# A server that cannot run hpchub's extension ends the job here with one "hpchub: " line naming the
# missing piece (hpchub_job.requirements, run by the Python of the server command's #! line, else
# python3, and told the server's command line: what it turns on, such as real-time collaboration or a
# jupytext pairing, is checked too), instead of starting without it while the spawn waits out its
# timeout. Then the server replaces this shell, so the scheduler's signals reach it.
server=$(command -v "$1") || {
    echo "hpchub: $1 is not on the PATH on $(hostname): the profile's environment must provide JupyterHub's single-user server (JupyterHub 4.x to 6.x with jupyter_server 2.x)" >&2
    exit 1
}
IFS= read -r shebang <"$server" || true
case $shebang in
    "#!"*python*) python=${shebang#"#!"} ;;
    *) python=python3 ;;
esac
# unquoted: a "#!/usr/bin/env python3" line is a command and its argument
$python -m hpchub_job.requirements "$@" || exit 1
exec "$@"
