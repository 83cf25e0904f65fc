# ipyparallel defaults for the Python environment that hpchub's jobs use. Installed as
# $VENV/etc/ipython/ipcluster_config.py (tests/setup-python.sh does this for the local venv),
# every ipyparallel Cluster in that environment then starts its controller with hpchub's
# launcher: listening where engines on other nodes reach it. With it a notebook needs only
#
#     cluster = ipyparallel.Cluster(engines="hpchub", n=8)
#
# Without it, add controller="hpchub" (or use hpchub.parallel.Cluster).
c = get_config()  # noqa: F821 - provided by ipyparallel
c.Cluster.controller_launcher_class = "hpchub"
