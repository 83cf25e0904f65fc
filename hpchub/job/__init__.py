"""The job side: what runs on the cluster as the user, never in the hub.

- ``jobfiles`` (``hpchub-job``): the user's files under ``~/.hpchub`` and the submission, on the
  login or submit host (through sudo or SSH);
- ``extension``: the Jupyter server extension in every server job (binds the node's address,
  reports the port, serves the walltime endpoint), on the compute node;
- ``probe``: ``hpchub doctor``'s probe job, on the compute node;
- ``walltime``, ``scheduler_commands``, ``logindefs``: what those need.

Everything here imports only the standard library, other modules of this package and, in
``extension`` only, ``jupyter_server`` (and its ``tornado``): never the rest of hpchub, so a job
needs nothing of the hub's dependencies (tests/test_job_side.py keeps it so).
"""
