"""hpchub: JupyterHub for HPC clusters (Slurm, Grid Engine)."""

from pathlib import Path

__version__ = "0.1.0"

# The hub page templates hpchub adds (home page, spawn-pending page); they extend JupyterHub's own.
# In jupyterhub_config.py: c.JupyterHub.template_paths = [hpchub.HUB_TEMPLATES]
HUB_TEMPLATES = str(Path(__file__).parent / "hub" / "hub_templates")


def __getattr__(name):
    # The spawner pulls in JupyterHub: load it only when asked (the CLI does not need it, and the job
    # side, which imports this package first, must not load it).
    if name == "HPCSpawner":
        from .hub.spawner import HPCSpawner

        return HPCSpawner
    raise AttributeError(name)
