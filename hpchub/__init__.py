"""hpchub: JupyterHub for HPC clusters (Slurm, Grid Engine)."""

__version__ = "0.1.0"


def __getattr__(name):
    # The spawner pulls in JupyterHub; load it only when asked (the CLI does not need it).
    if name == "HPCSpawner":
        from .spawner import HPCSpawner

        return HPCSpawner
    raise AttributeError(name)
