"""Golden disk images: a bootable Debian qcow2 built with mmdebstrap, cached by content."""

from builder.image.build import GoldenImage, build_golden_image, image_key, image_manifest, image_path
from builder.image.spec import IMAGE_BUILDER_VERSION, ImageSpec, package_set, task_packages, variant

__all__ = [
    "IMAGE_BUILDER_VERSION",
    "GoldenImage",
    "ImageSpec",
    "build_golden_image",
    "image_key",
    "image_manifest",
    "image_path",
    "package_set",
    "task_packages",
    "variant",
]
