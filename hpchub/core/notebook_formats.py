"""The grammar of a jupytext formats string (the site config's ``environment.jupytext``), checked
when the site config is loaded so that a typo names FILE:LINE instead of failing jobs.

The hub has no jupytext (installing it next to JupyterHub would switch it on in every server that
shares that environment), so this is a small copy of jupytext's own parser (jupytext.formats
``long_form_one_format`` and ``validate_one_format``; ``jupytext.config.normalize_formats`` for ``;``).
The lists below are those of jupytext 1.19.7 (NOTEBOOK_EXTENSIONS and _VALID_FORMAT_NAMES in
jupytext/formats.py). The job side has the authority: hpchub.job.requirements runs the environment's
own jupytext on the string before the server starts and ends the job with its answer.
"""

from __future__ import annotations

import re

# jupytext 1.19.7: jupytext.formats.NOTEBOOK_EXTENSIONS (".auto": the kernel's script extension).
NOTEBOOK_EXTENSIONS = (
    ".ipynb", ".md", ".markdown", ".Rmd", ".py", ".coco", ".R", ".r", ".jl", ".cpp", ".ss", ".clj", ".scm",
    ".sh", ".ps1", ".q", ".m", ".wolfram", ".pro", ".js", ".ts", ".scala", ".rs", ".robot", ".resource", ".cs",
    ".fsx", ".fs", ".sos", ".java", ".groovy", ".sage", ".ml", ".hs", ".tcl", ".mac", ".gp", ".do", ".sas",
    ".jenner", ".xsh", ".lgt", ".logtalk", ".lua", ".go", ".qmd", ".myst", ".mystnb", ".mnb", ".auto",
)
# jupytext 1.19.7: jupytext.formats._VALID_FORMAT_NAMES ("bare" is the old name of "nomarker").
FORMAT_NAMES = ("hydrogen", "light", "marimo", "markdown", "myst", "nomarker", "pandoc", "percent", "quarto",
                "rmarkdown", "sphinx", "spin", "bare")
# jupytext 1.19.7: the common names long_form_one_format accepts for a format.
COMMON_NAMES = {"notebook": "ipynb", "rmarkdown": "Rmd", "quarto": "qmd", "marimo": "py", "markdown": "md",
                "script": "auto", "c++": "cpp", "myst": "md:myst", "pandoc": "md:pandoc"}
# What the server's command line carries (quoted, but kept to what a formats string is made of).
FORMATS_CHARACTERS = re.compile(r"^[A-Za-z0-9_.:/,;+-]+$")


def format_problem(text: str) -> str | None:
    """Why one format (``py:percent``, ``notebooks///ipynb``, ``.pct.py``) is not one; None: it is."""
    text = COMMON_NAMES.get(text.lower(), text)
    if text.rfind("/") > 0:
        text = text.rsplit("/", 1)[1]
    if ":" in text:
        extension, name = text.rsplit(":", 1)
        if name not in FORMAT_NAMES:
            return f"{name!r} in {text!r} is not a jupytext format name (one of {', '.join(FORMAT_NAMES[:-1])})"
    else:
        extension = text
    if "." in extension[1:]:  # a suffix: ".pct.py", "nb.py"
        extension = extension[extension.rindex("."):]
    extension = extension if extension.startswith(".") else f".{extension}"
    if extension not in NOTEBOOK_EXTENSIONS:
        return f"{text!r} is not a notebook extension jupytext knows (ipynb, py, md, Rmd, qmd, auto, ...)"
    return None


def formats_problem(formats: str) -> str | None:
    """Why ``formats`` (``ipynb,py:percent``; groups of paired formats separated by ``;``) is not a
    jupytext pairing; None: it is."""
    if not formats:
        return "must not be empty: give the paired formats, like ipynb,py:percent"
    if not FORMATS_CHARACTERS.match(formats):
        return (f"{formats!r} has characters a jupytext formats string does not have (letters, digits and "
                "_ . : / , ; + -)")
    for group in formats.split(";"):
        members = group.split(",")
        if any(not member for member in members):
            return f"{formats!r} has an empty format (two commas or semicolons in a row, or one at an end)"
        if len(members) < 2:
            return f"{group!r} pairs nothing: give two formats or more, like ipynb,py:percent"
        for member in members:
            problem = format_problem(member)
            if problem is not None:
                return problem
    return None
