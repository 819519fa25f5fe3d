"""imgbuild make: render -> build -> image -> boot -> verify, on any target.

Reads like the recipe it runs: each step is a verb-named function, timed as a stage in the report.
"""

from __future__ import annotations

import contextlib
import shlex
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from builder.cachedir import cached_sha256, sha256_file
from builder.errors import CheckFailed, GuestCrashed, ImgbuildError, InvalidInput
from builder.fsutil import write_atomic
from builder.image.build import GoldenImage, build_golden_image, image_key
from builder.image.manifest import manifest_path
from builder.iso.installer import build_recipe_isos, read_seed_files
from builder.iso.seed import build_seed_iso, content_epoch
from builder.outdir import recipe_lock
from builder.pipeline import specs
from builder.pipeline.freshness import inputs_of
from builder.pipeline.report import Report
from builder.pipeline.stages import Stages
from builder.progress import NullProgress, Progress
from builder.recipe.model import Recipe
from builder.recipe.rules import method_problems
from builder.render.write import Rendered, render_recipe
from builder.targets.base import VM, ArtifactKind, Staged, Target
from builder.verify.checks import CheckRunner, GuestAccess, Outcome

ADDRESS_TIMEOUT = 900.0  # TCG boots are slow; the guest agent answers once the guest is up
INSTALL_TIMEOUT = 3 * 3600.0
SYSLOG_PORT = 5140


@dataclass
class MakeOptions:
    method: str | None = None  # override the recipe's install.method
    keep: bool = False  # leave the VM running
    keep_on_failure: bool = False  # leave a failed VM (and its uploads) for inspection
    replace: bool = True  # replace an existing VM of the same name (when it is not up to date)
    rebuild: bool = False  # a new VM even when the existing one was built from the same inputs
    refresh_image: bool = False  # build the golden image again from the mirror's current packages
    # shared by the jobs of one run: an image several recipes use is refreshed once, the others wait for it
    refresh_once: RefreshOnce | None = None


class RefreshOnce:
    """Which golden images a run has already refreshed. ``claim`` serialises the jobs that want the same image:
    the first refreshes it, the others wait and then reuse the fresh one (a failed refresh is tried again)."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._done: set[str] = set()

    @contextlib.contextmanager
    def claim(self, image: str) -> Iterator[bool]:
        with self._guard:
            lock = self._locks.setdefault(image, threading.Lock())
        with lock:
            yield image not in self._done
            self._done.add(image)


@dataclass
class Built:
    rendered: Rendered
    seed: Path
    installer: Path | None = None
    golden: GoldenImage | None = None
    staged: dict[str, Staged] = field(default_factory=dict)


def make(recipe: Recipe, out_root: Path, target: Target, options: MakeOptions,
         progress: Progress = NullProgress()) -> Report:
    method = options.method or recipe.install.method
    refuse_unsupported(recipe, method)
    report = Report(recipe=recipe.name, target=target.name, method=method)
    stages = Stages(report, progress)
    out_dir = out_root / recipe.name
    vm: VM | None = None
    built: Built | None = None
    created = False

    def leave(ok: bool) -> None:
        settle(target, vm, built, created=created, ok=ok, options=options, report=report, progress=progress)

    with recipe_lock(out_root, recipe.name, f"make {recipe.name}"), reported(report, out_dir / "report.json", leave):
        with stages.stage("check"):  # fail in seconds (privileges, node, storages, network), not after an upload
            target.preflight(specs.vm_spec(recipe, disk_source=None, cdroms=()),
                             media=("image", "iso") if method == "image" else ("iso",),
                             console=any(c.check == "desktop" for c in recipe.verify), progress=progress)
        with stages.stage("render"):
            rendered = render_recipe(recipe, out_root)
        with stages.stage("build"):
            built = build_artifacts(recipe, rendered, target, method, report, progress)
        if method == "image":
            with stages.stage("image") as record:
                built.golden = prepare_image(recipe, report, progress, refresh=options.refresh_image,
                                             once=options.refresh_once)
                record.reused = built.golden.cached
                report.changes = what_changed(built.golden, out_dir, report, progress)
        recorded = inputs_of(recipe, method=method, seed=built.seed, installer=built.installer,
                             image=built.golden.path if built.golden else None)
        report.cache["inputs"] = recorded.as_dict()
        inputs = recorded.key
        existing = target.find_vm(recipe.name)
        if existing is not None and target.is_template(existing):
            raise ImgbuildError(f"{recipe.name} on {target.name} is a template now; make will not replace it",
                                detail=f"make a VM from it with: imgbuild clone {recipe.name} --name NAME, "
                                       f"or remove it (and its clones) with imgbuild destroy")
        if existing is not None and not options.rebuild and target.built_from(existing) == inputs:
            with stages.stage("reuse") as record:
                record.reused = True
                vm = existing
                record.detail = "up to date: the VM was built from these exact inputs; verifying it again"
                progress.note(f"{recipe.name} is up to date on {target.name} (use --rebuild for a new VM)")
                report.vm = {"name": vm.name, "target": vm.target, "id": vm.ident, "reused": True, **where(vm)}
                # Its seed still staged: a run ended (killed) before verifying it. Finish that run's work: after
                # verification the seed is detached and removed; after a failure the VM goes like a new one.
                seed = target.staged_copy(built.seed, "iso", label=f"{recipe.name}-seed")
                if seed is not None:
                    built.staged["seed"] = seed
                    created = True
        else:
            with stages.stage("stage") as record:
                stage_media(target, built, report, progress)
                record.reused = not any(s.uploaded for s in built.staged.values())
            with stages.stage("create"):
                vm = create_vm(recipe, target, built, existing, method, inputs, options, report, progress)
                created = True
                report.vm = {"name": vm.name, "target": vm.target, "id": vm.ident, "reused": False, **where(vm)}
            if method == "installer":
                with stages.stage("install"):
                    run_installer(recipe, target, vm, out_dir, progress)
        boot_and_verify(stages, recipe, rendered, target, vm, built, out_dir)
    return report


def boot_and_verify(stages: Stages, recipe: Recipe, rendered: Rendered, target: Target, vm: VM, built: Built,
                    out_dir: Path) -> None:
    """The end of make and clone: boot, run the recipe's checks, then forget the seed (it holds a private key)."""
    with stages.stage("boot"):
        address = boot(recipe, target, vm, stages.progress, stages.report)
        stages.report.vm["address"] = address
    verify_stage(stages, recipe, rendered, target, vm, address, out_dir)
    forget_seed(target, vm, built, stages.progress)


@contextlib.contextmanager
def reported(report: Report, path: Path, leave: Callable[[bool], None]) -> Iterator[None]:
    """Run a job's stages; whatever happens, finish the report, leave the VM as promised, write the report."""
    try:
        yield
    except ImgbuildError as exc:
        report.finish(False, exc.message)
        raise
    except BaseException as exc:
        report.finish(False, f"{type(exc).__name__}: {exc}")
        raise
    else:
        report.finish(True)
    finally:
        leave(report.ok)
        report.write(path)


def where(vm: VM) -> dict[str, str]:
    """Where a VM lives when its target has several places (a Proxmox VE cluster's node), for the report."""
    return {"node": str(vm.data["node"])} if vm.data.get("node") else {}


def refuse_unsupported(recipe: Recipe, method: str) -> None:
    """``make --method`` may pick a method the recipe was not validated for: its fields must still all count."""
    found = method_problems(recipe.raw, method)
    if found:
        lines = [f"{recipe.source}: {'.'.join(map(str, path))}: {message}" for path, message in found]
        raise InvalidInput(f"{recipe.name} sets fields the {method} method cannot honour: {lines[0]}",
                           detail="\n".join(lines[1:]))


def verify_stage(stages: Stages, recipe: Recipe, rendered: Rendered, target: Target, vm: VM, address: str,
                 out_dir: Path) -> None:
    """The recipe's checks as the ``verify`` stage; any failed check fails the job (CheckFailed)."""
    report = stages.report
    with stages.stage("verify") as record:
        outcomes = verify(recipe, rendered.known_hosts, rendered.admin_key, target, vm, address, out_dir,
                          stages.progress)
        report.checks = [o.as_dict() for o in outcomes]
        announce = getattr(stages.progress, "checks", None)  # the job event stream has one event per check
        if callable(announce):
            announce(report.checks)
        failed = [o for o in outcomes if not o.ok]
        if failed:
            record.detail = f"{len(failed)} of {len(outcomes)} checks failed"
            raise CheckFailed(f"{len(failed)} check(s) failed: {', '.join(o.check for o in failed)}",
                              detail="\n".join(o.line() for o in failed))
    report.access = access_info(recipe, rendered, target, vm, address)


# --- steps -----------------------------------------------------------------------------------------


def build_artifacts(recipe: Recipe, rendered: Rendered, target: Target, method: str, report: Report,
                    progress: Progress) -> Built:
    """seed.iso always; installer.iso when the install method needs it. SHA256SUMS lists what exists."""
    out_dir = rendered.out_dir
    if method == "installer":
        log_host = target.installer_log_host(specs.guest_network(recipe))
        # DEBCONF_DEBUG=5 makes cdebconf log every question it really shows: a prompt fails the
        # install at once instead of at the deadline.
        args = [f"log_host={log_host}", f"log_port={SYSLOG_PORT}", "DEBCONF_DEBUG=5"] if log_host else []
        base_iso = recipe.install.base_iso
        base_sums = None
        if base_iso and base_iso.startswith(("http://", "https://")):
            base_sums = base_iso.rsplit("/", 1)[0] + "/SHA256SUMS"
        elif base_iso:
            base_iso = str(recipe.source.parent / Path(base_iso).expanduser())
        isos = build_recipe_isos(out_dir, release=recipe.release, mirror=recipe.mirror.url,
                                 proxy=recipe.mirror.proxy, base_iso=base_iso, base_iso_sums=base_sums,
                                 kernel_args=args, progress=progress)
        built = Built(rendered, isos.seed, isos.installer)
        for name, path in (("seed.iso", isos.seed), ("installer.iso", isos.installer)):
            report.add_artifact(name, path, isos.sha256[name], path.stat().st_size)
        return built
    progress.step("building seed.iso")
    files = read_seed_files(out_dir)
    seed = build_seed_iso(files, out_dir / "seed.iso", epoch=content_epoch(files))
    digest = sha256_file(seed)
    write_atomic(out_dir / "SHA256SUMS", f"{digest}  seed.iso\n")
    report.add_artifact("seed.iso", seed, digest, seed.stat().st_size)
    return Built(rendered, seed)


def prepare_image(recipe: Recipe, report: Report, progress: Progress, *, refresh: bool = False,
                  once: RefreshOnce | None = None) -> GoldenImage:
    spec = specs.image_spec(recipe)
    if refresh and once is not None:
        with once.claim(image_key(spec)) as mine:
            if not mine:
                progress.note("golden image already refreshed by another recipe in this run")
            golden = build_golden_image(spec, refresh=mine, progress=progress)
    else:
        golden = build_golden_image(spec, refresh=refresh, progress=progress)
    report.cache["image"] = {"path": str(golden.path), "key": golden.key, "reused": golden.cached,
                             "sha256": cached_sha256(golden.path),
                             # the installed packages, beside the image (builder/image/manifest.py)
                             "manifest": str(manifest_path(golden.path)) if golden.manifest else None,
                             "packages": len(golden.manifest.packages) if golden.manifest else None}
    changes = golden.changes
    if refresh and changes is not None:
        # Builds are reproducible: no package changed means the very same bytes, so the VM stays up to date.
        report.cache["image"].update(identical=golden.identical, changes=changes.as_dict())
        if golden.identical:
            progress.note("image refreshed: no package changed (the same bytes: nothing to rebuild or upload)")
        elif not changes:
            progress.note("warning: image refreshed: no package changed, yet the image's bytes differ from the "
                          "cached one's (a builder that cannot reproduce images: see the build's warnings)")
        else:
            progress.note(f"image refreshed: {changes.summary()}")
        return golden
    if refresh and not golden.cached:
        progress.note("image refreshed: no earlier package list to compare it with")
    progress.note(f"golden image {'reused' if golden.cached else 'built'}: {golden.path}")
    return golden


def what_changed(golden: GoldenImage, out_dir: Path, report: Report, progress: Progress) -> dict:
    """The image's packages against the previous build of this recipe (its history), as report.changes. The
    manifest is kept as a content-addressed copy: a refreshed image replaces the one beside it."""
    from builder.pipeline.changes import changes_since, keep_copy, previous_manifest

    if golden.manifest is not None:
        report.cache["image"]["manifest_copy"] = str(keep_copy(golden.manifest))
    changes = changes_since(previous_manifest(out_dir), golden.manifest, "the previous build")
    progress.note(f"since the previous build: {changes['summary']}")
    return changes


def media(built: Built) -> dict[str, tuple[Path, ArtifactKind, str]]:
    """What a VM of *built* needs on the target: key -> (local file, kind, label)."""
    name = built.rendered.recipe.name
    wanted: dict[str, tuple[Path, ArtifactKind, str]] = {}
    if built.golden is not None:
        wanted["image"] = (built.golden.path, "image", f"{name}-image")
    wanted["seed"] = (built.seed, "iso", f"{name}-seed")
    if built.installer is not None:
        wanted["installer"] = (built.installer, "iso", f"{name}-installer")
    return wanted


def stage_media(target: Target, built: Built, report: Report, progress: Progress, *, again: bool = False) -> None:
    """Put the media on the target (content-addressed: what it has is not transferred). *again*: after the
    earlier VM was destroyed, which may have removed media of the same name; what this run transferred
    before stays counted as transferred."""
    before = dict(built.staged)
    for key, (path, kind, label) in media(built).items():
        staged = target.stage(path, kind, label=label, progress=progress)
        if key in before and before[key].uploaded:
            staged = replace(staged, uploaded=True)
        built.staged[key] = staged
        if key == "image" and not again:
            assert built.golden is not None
            report.add_artifact("golden-image", path, staged.sha256, staged.size, reused=built.golden.cached)
    uploaded = [k for k, s in built.staged.items() if s.uploaded]
    report.cache["staged"] = {k: {"ref": s.ref, "uploaded": s.uploaded} for k, s in built.staged.items()}
    progress.note(f"staged on {target.name}{' again' if again else ''}: {', '.join(built.staged)} "
                  f"(transferred: {', '.join(uploaded) or 'nothing'})")


def create_vm(recipe: Recipe, target: Target, built: Built, existing: VM | None, method: str, inputs: str,
              options: MakeOptions, report: Report, progress: Progress) -> VM:
    if existing is not None:
        if not options.replace:
            raise ImgbuildError(f"a VM named {recipe.name} already exists on {target.name} and is not up to date",
                                detail=f"remove it with: imgbuild destroy {recipe.name} (or drop --no-replace)")
        progress.step(f"replacing the earlier VM {recipe.name} (built from other inputs)")
        target.destroy(existing)
        # Its media went with it, and content-addressed names make them the ones just staged when the bytes
        # are the same (a --rebuild of an unchanged recipe): stage again; only what was removed is transferred.
        stage_media(target, built, report, progress, again=True)
    cdroms: tuple[Staged | None, ...] = (built.staged["seed"],)
    if method == "installer":
        cdroms = (built.staged["installer"], built.staged["seed"])
    spec = replace(specs.vm_spec(recipe, disk_source=built.staged.get("image"), cdroms=cdroms), inputs=inputs)
    return target.create_vm(spec, progress=progress)


def run_installer(recipe: Recipe, target: Target, vm: VM, out_dir: Path, progress: Progress) -> None:
    """Boot the installer ISO on the blank disk, follow its syslog, wait for the power-off, eject it."""
    from builder.pipeline.installer_watch import watch_install

    stages = watch_install(target, vm, timeout=INSTALL_TIMEOUT, port=SYSLOG_PORT, progress=progress,
                           raw_log=out_dir / "installer-syslog.log")
    progress.note(f"install finished (stages: {', '.join(stages)}); ejecting the installer ISO")
    target.set_cdrom(vm, 0, None)


def boot(recipe: Recipe, target: Target, vm: VM, progress: Progress, report: Report | None = None) -> str:
    """Start *vm* (unless running) and return its address. A kernel panic while booting gets one restart:
    under TCG it is QEMU's doing, not the guest's; a second panic fails the job."""
    for attempt in (1, 2):
        if not target.is_running(vm):
            target.start(vm, progress=progress)
        progress.step("waiting for the guest agent to report an address")
        try:
            addresses = target.guest_addresses(vm, timeout=getattr(target, "address_timeout", None) or ADDRESS_TIMEOUT)
            break
        except GuestCrashed as exc:
            if attempt == 2:
                raise
            progress.note(f"warning: {exc.message}; restarting the VM once")
            if report is not None:
                report.vm.setdefault("restarts", []).append(exc.message)
            target.stop(vm)
    want = recipe.network.ip
    if want and want in addresses:
        return want
    v4 = [a for a in addresses if ":" not in a]
    address = (v4 or addresses)[0]
    progress.note(f"guest agent reports {', '.join(addresses)}; using {address}")
    return address


def verify(recipe: Recipe, known_hosts: Path, admin_key: Path | None, target: Target, vm: VM, address: str,
           out_dir: Path, progress: Progress) -> list[Outcome]:
    access = GuestAccess(target=target, vm=vm, address=address, user=recipe.admin.name,
                         known_hosts=known_hosts, key_file=admin_key,
                         screenshot=out_dir / "screenshot.png")
    return CheckRunner(recipe, access, progress).run_all()


def verify_again(recipe: Recipe, out_root: Path, target: Target, vm: VM, *, keep: bool = False,
                 progress: Progress = NullProgress()) -> list[Outcome]:
    """``imgbuild verify``: the recipe's checks against its existing VM, started for them when stopped (and
    shut down again unless *keep*), with the login material make left in OUT/NAME/."""
    from builder.render.write import login_material

    started = not target.is_running(vm)
    try:
        known_hosts, admin_key = login_material(recipe, out_root)  # as make left them: never rewritten here
        address = boot(recipe, target, vm, progress)
        return verify(recipe, known_hosts, admin_key, target, vm, address, out_root / recipe.name, progress)
    finally:
        if started and not keep:
            target.shutdown(vm)


def access_info(recipe: Recipe, rendered: Rendered, target: Target, vm: VM, address: str) -> dict:
    ssh_ep = target.endpoint(vm, address, 22)
    cmd = ["ssh"]
    if rendered.admin_key:
        cmd += ["-i", str(rendered.admin_key)]
    cmd += ["-o", f"UserKnownHostsFile={rendered.known_hosts}", "-o", f"HostKeyAlias={recipe.hostname}",
            "-o", "StrictHostKeyChecking=yes"]
    if ssh_ep.port != 22:
        cmd += ["-p", str(ssh_ep.port)]
    cmd.append(f"{recipe.admin.name}@{ssh_ep.host}")
    info: dict = {"address": address, "ssh": shlex.join(cmd), "urls": []}
    for check in recipe.verify:
        if check.check == "http":
            ep = target.endpoint(vm, address, check.port)
            info["urls"].append(f"http://{ep.host}:{ep.port}{check.path}")
    return info


def forget_seed(target: Target, vm: VM, built: Built, progress: Progress) -> None:
    """The seed ISO holds the guest's private host key: once verified, detach it and remove it from the target."""
    seed = built.staged.get("seed")
    target.set_cdrom(vm, 1 if built.installer is not None else 0, None)  # also a seed no longer staged
    if seed is not None:
        target.unstage(seed)
    progress.step("seed ISO detached and removed from the target")


def settle(target: Target, vm: VM | None, built: Built | None, *, created: bool, ok: bool, options: MakeOptions,
           report: Report, progress: Progress) -> None:
    """Leave things as promised. Success: the VM shut down cleanly, or running with --keep. Failure (unless
    --keep-on-failure): a VM this run created is destroyed and its seed ISO removed from the target; a VM this
    run only re-verified (it was up to date) is shut down, never destroyed."""
    try:
        if ok:
            if vm is not None and options.keep:
                report.vm["state"] = "running"
            elif vm is not None:
                _shutdown(target, vm, report, progress)
            return
        if options.keep_on_failure:
            if vm is not None:
                report.vm["state"] = "kept after failure"
                progress.note(f"keeping the failed VM for inspection; remove it with: imgbuild destroy {vm.name}")
            return
        if vm is not None and created:
            target.destroy(vm)
            report.vm["state"] = "destroyed after failure"
        elif vm is not None:
            _shutdown(target, vm, report, progress)
        seed = built.staged.get("seed") if built else None
        if seed is not None:
            target.unstage(seed)
    except ImgbuildError as exc:
        report.vm["state"] = f"cleanup failed: {exc.message}"
        progress.note(f"warning: cleanup after {'success' if ok else 'failure'} did not finish: {exc.message}")


def _shutdown(target: Target, vm: VM, report: Report, progress: Progress) -> None:
    progress.step("shutting the VM down")
    start = time.monotonic()
    target.shutdown(vm)
    report.vm["state"] = "shut down"
    report.vm["shutdown_seconds"] = round(time.monotonic() - start, 2)
