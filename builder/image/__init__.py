"""Golden disk images: a bootable Debian qcow2 built with mmdebstrap, cached by content."""

from builder.image.build import GoldenImage, build_golden_image, image_key, image_manifest, image_path, package_manifest
from builder.image.manifest import Manifest, ManifestDiff, Package, diff_manifests, read_manifest
from builder.image.spec import IMAGE_BUILDER_VERSION, ImageSpec, package_set, task_packages, variant

__all__ = [
    "IMAGE_BUILDER_VERSION",
    "GoldenImage",
    "ImageSpec",
    "Manifest",
    "ManifestDiff",
    "Package",
    "build_golden_image",
    "diff_manifests",
    "image_key",
    "image_manifest",
    "image_path",
    "package_manifest",
    "package_set",
    "read_manifest",
    "task_packages",
    "variant",
]
