"""UID_MIN of /etc/login.defs: the first uid of a person's account on this host. Standard library
only: ``hpchub-job`` reads it at every start."""

from __future__ import annotations

import os

LOGIN_DEFS = "/etc/login.defs"
UID_MIN_FALLBACK = 1000


def login_defs_uid_min(path: str | os.PathLike[str] = LOGIN_DEFS) -> int:
    """UID_MIN from login.defs (the first uid ``useradd`` gives a person), or 1000 if the file or
    the setting is missing or unreadable. Numbers are read as shadow-utils reads them (base 0:
    ``0x`` hex, a leading ``0`` octal)."""
    try:  # open(), not pathlib, and logging only for a bad file: hpchub-job starts faster without them
        with open(path, errors="replace") as file:
            text = file.read()
    except OSError:
        return UID_MIN_FALLBACK
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "UID_MIN":
            value = words[1]
            try:
                if value.lower().startswith("0x"):
                    return int(value, 16)
                return int(value, 8) if len(value) > 1 and value.startswith("0") else int(value, 10)
            except ValueError:
                import logging

                logging.getLogger("hpchub.logindefs").warning("%s: UID_MIN %r is not a number; using %d", path, value,
                                                              UID_MIN_FALLBACK)
                return UID_MIN_FALLBACK
    return UID_MIN_FALLBACK
