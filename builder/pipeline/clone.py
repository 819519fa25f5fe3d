"""imgbuild clone: a new VM from a recipe's VM, template or release, personalised by its own seed, then verified.

The clone gets what makes it a new machine: a new name and hostname, a new MAC address, a seed ISO
with a new cloud-init instance-id and its own SSH host key (rendered into OUT/NAME/), and, for a
recipe with a static address, the address given with --ip. It is booted and checked with the
recipe's checks, like `make` (the same steps), and leaves OUT/NAME/report.json.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import replace
from pathlib import Path

from builder.errors import ImgbuildError, InvalidInput
from builder.outdir import recipe_lock
from builder.pipeline import specs
from builder.pipeline.make import (
    Built,
    MakeOptions,
    boot_and_verify,
    build_artifacts,
    reported,
    settle,
    stage_media,
)
from builder.pipeline.report import Report
from builder.pipeline.stages import Stages
from builder.progress import NullProgress, Progress
from builder.recipe.model import Recipe
from builder.render.write import render_recipe
from builder.targets.base import VM, Target

HOSTNAME = re.compile(r"^(?=.{1,63}$)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?$")


def clone_address(recipe: Recipe, ip: str | None) -> str | None:
    """The clone's address: --ip (checked against the recipe's network) or the recipe's own."""
    if ip is None:
        return recipe.network.address
    if not recipe.network.is_static:
        raise InvalidInput(f"--ip is for recipes with a static address; {recipe.name} uses {recipe.network.mode}")
    try:
        iface = ipaddress.ip_interface(ip)
    except ValueError:
        raise InvalidInput(f"--ip {ip!r} is not an address with a prefix length (e.g. 192.168.1.251/24)") from None
    if "/" not in ip:
        raise InvalidInput(f"--ip {ip!r} needs a prefix length (e.g. {ip}/24)")
    gateway = recipe.network.gateway
    if gateway and ipaddress.ip_address(gateway) not in iface.network:
        raise InvalidInput(f"--ip {ip}: the recipe's gateway {gateway} is not in {iface.network}")
    return str(iface)


def clone_recipe(recipe: Recipe, name: str, *, address: str | None, mac: str) -> Recipe:
    network = replace(recipe.network, address=address, mac=mac.upper(), mac_given=True)
    return replace(recipe, name=name, hostname=name, network=network)


def check_clone_name(recipe: Recipe, name: str) -> None:
    if not HOSTNAME.match(name):
        raise InvalidInput(f"--name {name!r} must be a host name: letters, digits and '-' (not first or last), "
                           "at most 63")
    if name == recipe.name:
        raise InvalidInput(f"the clone needs a name of its own (not {recipe.name})")


def clone(recipe: Recipe, name: str, out_root: Path, target: Target, *, ip: str | None = None, linked: bool = False,
          source: str | None = None, options: MakeOptions | None = None,
          progress: Progress = NullProgress()) -> Report:
    """Clone *source* (a VM, template or release of RECIPE; by default its latest release, else the recipe's
    own VM) as *name*, boot it with its own seed and verify it. Raises like make()."""
    options = options or MakeOptions()
    check_clone_name(recipe, name)
    derived = clone_recipe(recipe, name, address=clone_address(recipe, ip), mac=target.clone_mac(name))
    report = Report(recipe=name, target=target.name, method="linked clone" if linked else "full clone")
    report.vm = {"source": recipe.name}
    stages = Stages(report, progress)
    out_dir = out_root / name
    vm: VM | None = None
    built: Built | None = None

    def leave(ok: bool) -> None:
        settle(target, vm, built, created=vm is not None, ok=ok, options=options, report=report,
               progress=progress)

    with recipe_lock(out_root, name, f"clone {name}"), reported(report, out_dir / "report.json", leave):
        with stages.stage("find") as record:
            origin = find_source(recipe, target, source)
            record.detail = f"cloning {origin.name}"
            report.vm["source"] = origin.name
            if target.find_vm(name) is not None:
                raise ImgbuildError(f"a VM named {name} already exists on {target.name}",
                                    detail=f"remove it with: imgbuild destroy {name}")
            target.preflight(specs.vm_spec(derived, disk_source=None, cdroms=()), media=("iso",), source=origin,
                             console=any(c.check == "desktop" for c in recipe.verify), progress=progress)
        with stages.stage("render"):
            rendered = render_recipe(derived, out_root)
        with stages.stage("build"):
            built = build_artifacts(derived, rendered, target, "image", report, progress)
        with stages.stage("stage"):
            stage_media(target, built, report, progress)
        with stages.stage("clone"):
            vm = target.clone(origin, name, full=not linked, seed=built.staged["seed"],
                              network=specs.guest_network(derived))
            report.vm.update({"name": vm.name, "target": vm.target, "id": vm.ident, "linked": linked})
        boot_and_verify(stages, derived, rendered, target, vm, built, out_dir)
    return report


def find_source(recipe: Recipe, target: Target, source: str | None) -> VM:
    """What a clone of *recipe* is made from: *source* when named (a release or any VM of the recipe),
    else the recipe's latest release, else the recipe's own VM or template."""
    from builder.pipeline.releases import latest_release

    if source is not None:
        vm = target.find_vm(source)
        if vm is None:
            raise ImgbuildError(f"no release or VM named {source} on {target.name} to clone",
                                detail=f"see the releases with: imgbuild status --target {target.name}")
        return vm
    latest = latest_release(target, recipe.name)
    if latest is not None:
        return latest
    vm = target.find_vm(recipe.name)
    if vm is None:
        raise ImgbuildError(f"no release of {recipe.name} and no VM named {recipe.name} on {target.name} to clone",
                            detail=f"make one first: imgbuild release {recipe.name} (or imgbuild make {recipe.name})")
    return vm
