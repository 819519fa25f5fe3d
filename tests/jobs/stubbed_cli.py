"""imgbuild's CLI with the guest side stubbed as in conftest.py, for tests that signal or kill -9 a real process.

Environment: STUB_IMAGE (the golden image to hand out), STUB_HANG (a VM name ending: its checks hang, after
writing the VM's name to STUB_SIGNAL, so the test knows where the process is when it signals it).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from builder.cli.main import main
from builder.image.build import GoldenImage
from builder.pipeline import freshness
from builder.pipeline import make as make_module
from builder.verify.checks import Outcome

IMAGE = Path(os.environ["STUB_IMAGE"])
HANG = os.environ.get("STUB_HANG")


def golden(spec, refresh=False, progress=None):  # type: ignore[no-untyped-def]
    return GoldenImage(IMAGE, "test-key", cached=True)


def verify(recipe, known_hosts, admin_key, target, vm, address, out_dir, progress):  # type: ignore[no-untyped-def]
    if HANG and vm.name.endswith(HANG):
        Path(os.environ["STUB_SIGNAL"]).write_text(vm.name)
        for _ in range(36000):  # like the pipeline's waits: short sleeps
            time.sleep(0.1)
    return [Outcome("ssh", True, "login", f"stub: {address}")]


make_module.build_golden_image = golden  # type: ignore[assignment]
make_module.verify = verify  # type: ignore[assignment]
make_module.ADDRESS_TIMEOUT = 5.0
freshness.image_path = lambda spec: IMAGE  # type: ignore[assignment]

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
