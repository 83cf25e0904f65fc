"""``hpchub.spawner.HPCSpawner``: the spawner's class path as sites' configs name it
(``c.JupyterHub.spawner_class``, wrapspawner's ProfilesSpawner profiles). It lives in
hpchub/hub/spawner.py; ``c.JupyterHub.spawner_class = "hpchub"`` (the entry point) needs no path."""

from .hub.spawner import HPCSpawner

__all__ = ["HPCSpawner"]
