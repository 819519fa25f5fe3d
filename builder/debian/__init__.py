"""Debian archive access: signed Release → Packages → .deb, and reading files out of a .deb."""

from builder.debian.archive import DEFAULT_MIRROR, Archive, ArchiveError, NotFound, PackageRef
from builder.debian.debfile import DebError, extract, extract_paths, list_files, read_file

__all__ = [
    "DEFAULT_MIRROR",
    "Archive",
    "ArchiveError",
    "DebError",
    "NotFound",
    "PackageRef",
    "extract",
    "extract_paths",
    "list_files",
    "read_file",
]
