"""Templates and `imgbuild clone` work on the local target too (one real boot: the clone's).

The source VM is created from web-server's golden image on the local target and never booted (what
`make` would leave after verification, minus the boot); it becomes a template and the CLI makes a
linked clone with its own seed (hostname, MAC, address from --ip, host key, instance-id), which boots
and passes the recipe's checks over SSH and HTTP. The template refuses to boot, and to be destroyed while
its linked clone exists.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from builder.errors import ImgbuildError
from builder.image.build import build_golden_image
from builder.pipeline import specs
from builder.recipe import load_recipe
from builder.targets.local import LocalTarget, LocalVM, derive_mac
from tests.pve.conftest import REPO, cli_env, imgbuild

pytestmark = pytest.mark.boot


def test_template_and_linked_clone_on_the_local_target(tmp_path: Path) -> None:
    recipe = load_recipe("web-server", REPO / "recipes")
    out = tmp_path / "out"
    target = LocalTarget(out)
    golden = build_golden_image(specs.image_spec(recipe))
    image = target.stage(golden.path, "image", label="web-server")
    target.create_vm(specs.vm_spec(recipe, disk_source=image, cdroms=(None,)))
    env = cli_env(tmp_path)
    try:
        # the target's own template (`imgbuild template` publishes a release, proven by a clone boot: that is
        # tests/jobs/test_nightly_boot.py); `imgbuild clone` of a recipe without releases takes its template
        target.make_template(target.find_vm("web-server"))  # type: ignore[arg-type]
        proc = imgbuild("clone", "web-server", "--name", "web-2", "--ip", "192.168.1.251/24", "--linked",
                        "--target", "local", env=env, timeout=1800)
        assert proc.returncode == 0, proc.stderr[-3000:]
        report = json.loads((out / "web-2" / "report.json").read_text())
        assert report["ok"] and report["method"] == "linked clone" and report["vm"]["address"] == "192.168.1.251"
        assert all(c["ok"] for c in report["checks"]) and len(report["checks"]) == 3
        clone = target.find_vm("web-2")
        assert isinstance(clone, LocalVM) and clone.state and clone.state.macs == [derive_mac("web-2", 0)]
        assert clone.state.template_of == "web-server" and clone.state.cdroms[0] is None  # seed forgotten
        assert derive_mac("web-2", 0) in (out / "web-2" / "network-config").read_text()

        template = target.find_vm("web-server")
        assert template is not None and target.is_template(template)
        with pytest.raises(ImgbuildError, match="is a template; clone it"):
            target.start(template)
        proc = imgbuild("destroy", "web-server", "--target", "local", env=env)
        assert proc.returncode == 1 and "template of linked clones: web-2" in proc.stderr, proc.stderr
        assert target.find_vm("web-server") is not None
    finally:
        for name in ("web-2", "web-server"):
            imgbuild("destroy", name, "--target", "local", env=env)
    assert target.find_vm("web-2") is None and target.find_vm("web-server") is None
