"""debconf-set-selections -c, the preseed validator, run against a private debconf database.

Even with -c (parse only) debconf-set-selections opens the system's database and exits 1, silently, while
another process holds it (apt installing something, or a second test worker checking a preseed at the
same moment). A private, empty database makes the check depend on the file alone.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path


def check_preseed(path: Path) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="debconf-") as db:
        env = {**os.environ, "DEBCONF_DB_REPLACE": f"File{{{db}/config.dat}}",
               "DEBCONF_DB_OVERRIDE": f"File{{{db}/templates.dat}}"}
        return subprocess.run(["debconf-set-selections", "-c", str(path)], capture_output=True, text=True,
                              env=env, timeout=120, check=False)
