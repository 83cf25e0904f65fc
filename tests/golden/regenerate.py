"""Rewrite the golden job scripts after an intended template change; review the diff before committing.

    python tests/golden/regenerate.py
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers.render_cases import GOLDEN_DIR, golden_cases, render_case  # noqa: E402

for case in golden_cases():
    (GOLDEN_DIR / case.filename).write_text(render_case(case))
    print("wrote", case.filename)
