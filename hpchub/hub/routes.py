"""hpchub's pages and endpoints among JupyterHub's routes: the port report, the engines endpoint,
the class page, the Share page and the form's start estimates (each module's ``HANDLERS``).

A hub that imports hpchub before it builds its routes (``c.JupyterHub.spawner_class`` names
HPCSpawner) takes them from ``jupyterhub.handlers.default_handlers``; one that built them first
(HPCSpawner as a wrapspawner child, imported at a user's first spawn) gets them added to its
running tornado application."""

from __future__ import annotations

import logging
from typing import Any

from jupyterhub.utils import url_path_join

from . import engines, estimate, porthandler, sharing, teaching

log = logging.getLogger("hpchub.routes")


def hpchub_handlers() -> list[tuple[str, Any]]:
    return [*porthandler.HANDLERS, *engines.HANDLERS, *teaching.HANDLERS, *sharing.HANDLERS, *estimate.HANDLERS]


def register_at_import() -> None:
    """Add hpchub's routes to JupyterHub's list, for hubs that import hpchub before building routes."""
    from jupyterhub import handlers

    for route, handler in hpchub_handlers():
        if not any(entry[1] is handler for entry in handlers.default_handlers):
            handlers.default_handlers.append((route, handler))


def ensure_registered_in_running_hub() -> None:
    """Add hpchub's routes a running hub lacks (it built its routes before hpchub was imported)."""
    from jupyterhub.app import JupyterHub

    if not JupyterHub.initialized():
        return
    app = JupyterHub.instance()
    tornado_app = getattr(app, "tornado_application", None)
    if tornado_app is None or getattr(tornado_app, "_hpchub_routes", False):
        return
    present = {entry[1] for entry in getattr(app, "handlers", [])}
    missing = [(url_path_join(app.hub_prefix, route), handler) for route, handler in hpchub_handlers()
               if handler not in present]
    if missing:
        tornado_app.add_handlers(".*$", missing)
        log.info("registered %s in the running hub", ", ".join(route for route, _ in missing))
    tornado_app._hpchub_routes = True
