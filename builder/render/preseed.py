"""Render preseed.cfg from the templates in preseed/ (Jinja2, StrictUndefined)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from builder.recipe.model import Recipe
from builder.render.inputs import RenderInputs
from builder.render.late_script import late_command_line
from builder.render.templates import environment, templates_dir

SERIAL_KERNEL_OPTS = "console=tty0 console=ttyS0,115200n8"


def preseed_context(recipe: Recipe, inputs: RenderInputs) -> dict[str, Any]:
    net = recipe.network
    language, _, rest = recipe.locale.partition("_")
    admin = recipe.admin
    groups = ["audio", "cdrom", "video", "plugdev", "netdev"] + (["sudo"] if admin.sudo else [])
    return {
        "name": recipe.name,
        "source": recipe.source.name,
        "release": recipe.release,
        "locale": recipe.locale,
        "language": language,
        "country": rest[:2],
        "keyboard": recipe.keyboard,
        "timezone": recipe.timezone,
        "hostname": recipe.hostname,
        "domain": recipe.domain,
        "network": {
            "mode": net.mode,
            "static": net.is_static,
            "ip": net.ip,
            "netmask": net.netmask,
            "gateway": net.gateway,
            "nameservers": " ".join(net.nameservers or ((net.gateway,) if net.gateway else ())),
        },
        "mirror": {"host": recipe.mirror.host, "path": recipe.mirror.path, "proxy": recipe.mirror.proxy or ""},
        "root": {"login": recipe.root.login, "password_hash": inputs.root_hash},
        "admin": {
            "name": admin.name,
            "full_name": admin.full_name or admin.name,
            "password_hash": inputs.password_hashes.get(admin.name) or "!",
            "groups": " ".join(groups),
        },
        "disk": {
            "device": "/dev/vda",
            "recipe": recipe.disk.partitioning,
            "lvm": recipe.disk.lvm,
            "vg_name": f"{recipe.hostname}-vg",
            "label": "gpt" if recipe.vm.bios == "ovmf" else "msdos",
        },
        "tasks": ", ".join(recipe.tasks),
        "packages": " ".join(recipe.all_packages),
        "kernel_opts": SERIAL_KERNEL_OPTS,
        "late_command": late_command_line(recipe, inputs),
        "late_count": len(recipe.late_commands),
    }


def render_preseed(recipe: Recipe, inputs: RenderInputs, template_dir: Path | None = None) -> str:
    env = environment(template_dir or templates_dir())
    return env.get_template("preseed.cfg.j2").render(preseed_context(recipe, inputs))
