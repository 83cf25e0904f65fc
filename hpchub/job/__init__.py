"""The job side: what runs on the cluster as the user, never in the hub.

- ``jobfiles`` (``hpchub-job``): the user's files under ``~/.hpchub`` and the submission, on the
  login or submit host (through sudo or SSH);
- ``extension``: the Jupyter server extension in every server job (binds the node's address,
  reports the port, serves the walltime endpoint), on the compute node;
- ``probe``: ``hpchub doctor``'s probe job, on the compute node;
- ``engines``: ipyparallel's ``hpchub`` launchers in the user's kernel: engines asked of the hub with
  the server's own token, a controller the engines reach, on the compute node;
- ``walltime``, ``scheduler_commands``, ``logindefs``: what those need.

Everything here imports only the standard library, other modules of this package and, in
``extension`` only, ``jupyter_server`` (and its ``tornado``), in ``engines`` only ``ipyparallel``
(and the ``traitlets`` its launchers are made of; the kernel that imports it has ipyparallel, or
``ipp.Cluster`` would not be asking): never the rest of hpchub, so a job needs nothing of the hub's
dependencies (tests/test_job_side.py keeps it so).
"""

# ipyparallel finds the launchers by these entry points (group -> name -> "module:attribute", the
# module relative to this package): the job side's copy that travels with the job declares them, so
# ``ipp.Cluster(engines="hpchub")`` works in a kernel without hpchub installed. Where hpchub is
# installed too, ipyparallel takes the entry point it lists last (the installed package's
# hpchub.parallel launchers, subclasses of these): inside a server job both ask the hub.
IPYPARALLEL_ENTRY_POINTS = {
    "ipyparallel.engine_launchers": {"hpchub": "engines:HPCEngineSetLauncher"},
    "ipyparallel.controller_launchers": {"hpchub": "engines:HPCControllerLauncher"},
}
