"""imgbuild cache: what the cache holds, and --prune for golden images no recipe uses any more."""

from __future__ import annotations

import argparse
from pathlib import Path

from builder.cachedir import cache_root
from builder.cli.context import Context
from builder.errors import ImgbuildError, InvalidInput
from builder.image.build import image_path
from builder.image.inventory import CachedImage, cached_images, other_areas, remove_image
from builder.pipeline.jobs import image_spec
from builder.progress import human_bytes
from builder.recipe import check_recipe, list_recipe_files


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cache", help="show the cache; --prune removes golden images no recipe uses",
                       description="Show the cache (downloads, apt archives, golden images) with sizes, and which "
                                   "recipe in the recipes directory uses each golden image. A changed recipe gets a "
                                   "new image, so old ones pile up: --prune removes images that no recipe there "
                                   "uses. VMs never depend on a cached image (targets hold their own copies); a "
                                   "pruned image is only built again if a recipe asks for it.")
    p.add_argument("--prune", action="store_true", help="remove golden images that no recipe uses")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(ctx: Context, args: argparse.Namespace) -> int:
    users, invalid = image_users(ctx.recipes_dir)
    images = cached_images()
    removed: list[CachedImage] = []
    busy: list[CachedImage] = []
    if args.prune:
        if not any(users.values()):
            raise ImgbuildError(f"no valid recipe in {ctx.recipes_dir}: refusing to prune every golden image",
                                detail="point --recipes-dir at the recipes whose images you want to keep")
        if invalid:  # an invalid recipe may be fixed to use one of these images: say so, prune the rest
            ctx.out.text(f"note: {len(invalid)} invalid recipe(s) not considered: {', '.join(invalid)}")
        for image in images:
            if not users.get(image.path):
                (removed if remove_image(image) else busy).append(image)
    kept = [i for i in images if i not in removed]
    unused = [i for i in kept if not users.get(i.path)]
    areas = other_areas()

    ctx.out.data({
        "cache": str(cache_root()),
        "images": [image_row(i, users.get(i.path, [])) for i in kept],
        "removed": [image_row(i, []) for i in removed],
        "busy": [str(i.path) for i in busy],
        "areas": areas,
    })
    ctx.out.text(f"cache: {cache_root()} (images {human_bytes(sum(i.size for i in kept))}, "
                 f"other {human_bytes(sum(areas.values()))})")
    if kept:
        ctx.out.table([(i.path.name, human_bytes(i.size), i.built or "-", describe(i),
                        ", ".join(users.get(i.path, [])) or "unused") for i in kept],
                      header=("IMAGE", "SIZE", "BUILT", "HOLDS", "USED BY"))
    for image in removed:
        ctx.out.text(f"removed {image.path.name} ({human_bytes(image.size)})")
    for image in busy:
        ctx.out.text(f"kept {image.path.name}: it is being built right now")
    if removed:
        ctx.out.text(f"freed {human_bytes(sum(i.size for i in removed))}")
    elif unused and not args.prune:
        ctx.out.text(f"{len(unused)} image(s) no recipe in {ctx.recipes_dir} uses "
                     f"({human_bytes(sum(i.size for i in unused))}): imgbuild cache --prune removes them")
    if areas:
        ctx.out.text("other: " + ", ".join(f"{name} {human_bytes(size)}" for name, size in areas.items()))
    return 0


def image_users(recipes_dir: Path) -> tuple[dict[Path, list[str]], list[str]]:
    """The cached image path each valid recipe resolves to (whatever its install method: --method image can
    ask for it), and the names of invalid recipes."""
    users: dict[Path, list[str]] = {}
    invalid = []
    for path in list_recipe_files(recipes_dir):
        recipe = check_recipe(path, recipes_dir).recipe
        try:
            image = image_path(image_spec(recipe)) if recipe is not None else None
        except InvalidInput:
            image = None
        if recipe is None or image is None:
            invalid.append(path.stem)
            continue
        users.setdefault(image, []).append(recipe.name)
    return users, invalid


def describe(image: CachedImage) -> str:
    spec = image.spec
    if not spec:
        return "?"
    what = [spec.get("release", "?"), spec.get("bios", "?"), "+".join(spec.get("tasks") or []) or "minimal"]
    if spec.get("packages"):
        what.append(f"{len(spec['packages'])} packages")
    return " ".join(what)


def image_row(image: CachedImage, used_by: list[str]) -> dict:
    return {"path": str(image.path), "size": image.size, "built": image.built, "spec": image.spec,
            "used_by": used_by}
