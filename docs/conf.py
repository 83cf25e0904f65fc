"""Sphinx configuration of hpchub's docs (MyST Markdown, the pydata theme: as JupyterHub's own docs).

Built by ``bash docs/build.sh`` with warnings as errors and every internal link and cross-reference
checked; nothing is fetched from the network (no intersphinx, no external link check)."""

from __future__ import annotations

import sys
from pathlib import Path

# The reference documents this checkout's code, not whatever copy a venv holds.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).parent / "_ext"))

project = "hpchub"
author = "the hpchub authors"
copyright = "the hpchub authors"

extensions = ["myst_parser", "hpchub_reference"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "screenshots/README*"]

# MyST: heading anchors for [text](page.md#heading) links, and every internal link must resolve.
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 4
myst_all_links_external = False
nitpicky = True
suppress_warnings: list[str] = []

html_theme = "pydata_sphinx_theme"
html_title = "hpchub"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
    # no external icons or version switcher: the build runs offline
    "icon_links": [],
}
html_static_path: list[str] = []
html_show_sourcelink = False
