"""Make this directory importable, so the python executor can import ``exec_stage_functions``.

pytest's default ``prepend`` import mode already puts it on ``sys.path``; this keeps the tests
working under ``--import-mode=importlib`` too.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)
