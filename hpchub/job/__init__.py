"""The job side: what runs on the cluster as the user, never in the hub.

- ``jobfiles`` (``hpchub-job``): the user's files under ``~/.hpchub`` and the submission, on the
  login or submit host (through sudo or SSH);
- ``extension``: the Jupyter server extension in every server job (binds the node's address,
  reports the port, serves the walltime endpoint), on the compute node;
- ``probe``: ``hpchub doctor``'s probe job, on the compute node;
- ``engines``: ipyparallel's ``hpchub`` launchers in the user's kernel: engines asked of the hub with
  the server's own token, a controller the engines reach, on the compute node;
- ``requirements``: the server job's check of its environment (JupyterHub's singleuser server and
  jupyter_server in a version hpchub supports), before the server starts;
- ``walltime``, ``scheduler_commands``, ``logindefs``: what those need.

A server job does not need hpchub installed where it runs: this package travels with the job as
``hpchub_job`` (BUNDLE_PACKAGE; hpchub.core.bundle writes it into the job's directory, with the
labextension hpchub-walltime and a ``*.dist-info`` whose entry points are ENTRY_POINTS), so its
modules import each other relatively and name themselves by ``__name__``.

Everything here imports only the standard library, other modules of this package and, in
``extension`` only, ``jupyter_server`` (and its ``tornado``), in ``engines`` only ``ipyparallel``
(and the ``traitlets`` its launchers are made of; the kernel that imports it has ipyparallel, or
``ipp.Cluster`` would not be asking): never the rest of hpchub, so a job needs nothing of the hub's
dependencies (tests/test_job_side.py keeps it so).
"""

from __future__ import annotations  # ENTRY_POINTS' annotation is not evaluated on an older job Python

# The job side's own top-level name in a job's bundle: never ``hpchub``, so the bundle cannot shadow
# (or be shadowed by) an hpchub installed in the job's environment.
BUNDLE_PACKAGE = "hpchub_job"
# Modules of this package that stay out of the bundle: the login node's hpchub-job (with the UID_MIN it
# reads) and the doctor's probe, which is sent as a job file of its own.
NOT_IN_BUNDLE = ("jobfiles", "logindefs", "probe")
# ipyparallel finds the launchers by these entry points (group -> name -> "module:attribute", the
# module relative to this package): the bundle that travels with the job declares them, so
# ``ipp.Cluster(engines="hpchub")`` works in a kernel without hpchub installed. Where hpchub is
# installed too, ipyparallel takes the entry point it lists last (the installed package's
# hpchub.parallel launchers, subclasses of these): inside a server job both ask the hub.
IPYPARALLEL_ENTRY_POINTS = {
    "ipyparallel.engine_launchers": {"hpchub": "engines:HPCEngineSetLauncher"},
    "ipyparallel.controller_launchers": {"hpchub": "engines:HPCControllerLauncher"},
}
# The bundle's entry points (group -> {name: "hpchub_job.module:attr"}), written as the
# entry_points.txt of its dist-info, so importlib.metadata finds them on the job's PYTHONPATH.
ENTRY_POINTS: dict[str, dict[str, str]] = {
    group: {name: f"{BUNDLE_PACKAGE}.{target}" for name, target in entries.items()}
    for group, entries in IPYPARALLEL_ENTRY_POINTS.items()
}
