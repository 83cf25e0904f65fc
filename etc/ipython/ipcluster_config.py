# ipyparallel's defaults inside jobs that hpchub started. The hpchub package installs this file as
# $PREFIX/etc/ipython/ipcluster_config.py, which ipyparallel reads for every Cluster made with this
# Python environment. Outside hpchub's server jobs (no $HPCHUB_SITE_CONFIG) it changes nothing.
import os

if os.environ.get("HPCHUB_SITE_CONFIG"):
    # ipyparallel's default controller listens on localhost: engine jobs on other nodes could
    # never register. hpchub's listens where they reach it, so that a notebook needs only
    # ipyparallel.Cluster(engines="hpchub", n=8).
    get_config().Cluster.controller_launcher_class = "hpchub"  # noqa: F821 - given by the config loader
