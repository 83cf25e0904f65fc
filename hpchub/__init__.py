"""hpchub: JupyterHub for HPC clusters (Slurm, Grid Engine)."""

import os.path

__version__ = "0.1.0"

# The hub page templates hpchub adds (home page, spawn-pending page); they extend JupyterHub's own.
# In jupyterhub_config.py: c.JupyterHub.template_paths = [hpchub.HUB_TEMPLATES]
# (os.path, not pathlib: hpchub-job imports this package at every start and pathlib costs it 5 ms)
HUB_TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hub", "hub_templates")


def __getattr__(name):
    # The spawner pulls in JupyterHub: load it only when asked (the CLI does not need it, and the job
    # side, which imports this package first, must not load it).
    if name == "HPCSpawner":
        from .hub.spawner import HPCSpawner

        return HPCSpawner
    raise AttributeError(name)
