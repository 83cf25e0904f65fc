"""The command-line and admin face: the ``hpchub`` command (``cli``: check, render, submit,
doctor ...), what ``hpchub check`` says beyond the schema (``checks``) and ``hpchub doctor``
(``doctor``, which runs hpchub/job/probe.py as a job). Run by an admin on the hub's host (or by
anyone with a site config); commands for a user run as that user, through the transports."""
