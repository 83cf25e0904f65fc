"""Resource quantities as admins and users write them: memory sizes and walltimes.

Both keep the text they were written as (for messages) and compare by value.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

# Digits are bounded: a 400-digit size is a user's typo or probe, and must be a clear "no" (HTTP
# 400), not an overflow deep in a comparison (HTTP 500).
_MEMORY_RE = re.compile(r"^\s*([0-9]{1,12}(?:\.[0-9]{1,6})?)\s*([KMGT])i?B?\s*$", re.IGNORECASE)
_MEMORY_FACTORS = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_WALLTIME_RE = re.compile(r"^\s*(?:([0-9]{1,5})-)?([0-9]{1,7}):([0-5][0-9]):([0-5][0-9])\s*$")


@dataclass(frozen=True, order=True)
class Memory:
    """A memory size such as ``4G`` (binary units: K, M, G, T)."""

    bytes: int
    text: str = field(compare=False)

    @classmethod
    def parse(cls, value: object) -> Memory:
        if isinstance(value, Memory):
            return value
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise ValueError(f"{value!r} is not a memory size; write it like 512M, 4G or 1T")
        if isinstance(value, int):
            raise ValueError(f"{value} has no unit; write it like {value}M or {value}G")
        match = _MEMORY_RE.match(value)
        if not match:
            raise ValueError(f"{value!r} is not a memory size; write it like 512M, 4G or 1T")
        number, unit = match.groups()
        size = int(float(number) * _MEMORY_FACTORS[unit.upper()])
        if size <= 0:
            raise ValueError(f"{value!r} must be more than zero")
        return cls(size, value.strip())

    @property
    def megabytes(self) -> int:
        """Whole MiB, rounded up (schedulers take integer MiB)."""
        return math.ceil(self.bytes / 1024**2)

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True, order=True)
class Walltime:
    """A run-time limit written ``HH:MM:SS`` or ``D-HH:MM:SS`` (hours may exceed 24)."""

    seconds: int
    text: str = field(compare=False)

    @classmethod
    def parse(cls, value: object) -> Walltime:
        if isinstance(value, Walltime):
            return value
        if not isinstance(value, str):
            # YAML 1.1 reads 04:00:00 unquoted as a sexagesimal integer; our loader keeps it
            # a string, so anything else really is a mistake.
            raise ValueError(f"{value!r} is not a walltime; write it as HH:MM:SS or D-HH:MM:SS")
        match = _WALLTIME_RE.match(value)
        if not match:
            raise ValueError(f"{value!r} is not a walltime; write it as HH:MM:SS or D-HH:MM:SS")
        days, hours, minutes, seconds = (int(part or 0) for part in match.groups())
        total = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
        if total <= 0:
            raise ValueError(f"{value!r} must be longer than zero")
        return cls(total, value.strip())

    @property
    def hms(self) -> str:
        """``HH:MM:SS`` with hours past 24 (Grid Engine's h_rt, Slurm's --time)."""
        hours, rest = divmod(self.seconds, 3600)
        minutes, seconds = divmod(rest, 60)
        return f"{hours:02d}:{minutes:02d}:{seconds:02d}"

    @property
    def dhms(self) -> str:
        """``D-HH:MM:SS`` once a day or longer, else ``HH:MM:SS`` (Slurm's --time)."""
        days, rest = divmod(self.seconds, 86400)
        hours, rest = divmod(rest, 3600)
        minutes, seconds = divmod(rest, 60)
        clock = f"{hours:02d}:{minutes:02d}:{seconds:02d}"
        return f"{days}-{clock}" if days else clock

    @property
    def minutes(self) -> int:
        return math.ceil(self.seconds / 60)

    def __str__(self) -> str:
        return self.text
