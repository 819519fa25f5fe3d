"""The installer's late script: a POSIX shell script built from data, every value shell-quoted.

It runs inside the installed system (``in-target``) at the end of a preseeded install.
"""

from __future__ import annotations

import base64
import shlex

from builder.recipe.model import Recipe
from builder.render.inputs import RenderInputs

LATE_DIR = "/var/lib/imgbuild"
LATE_COMMANDS = f"{LATE_DIR}/late-commands.sh"
LATE_DONE = f"{LATE_DIR}/late-commands.done"


def user_commands_script(recipe: Recipe) -> str:
    """The recipe's late_commands as one script (shared by the installer and cloud-init's first boot)."""
    lines = ["#!/bin/sh", f"# late_commands of recipe {recipe.name}", "set -e"]
    lines += list(recipe.late_commands)
    return "\n".join(lines) + "\n"


def late_script(recipe: Recipe, inputs: RenderInputs) -> str:
    q = shlex.quote
    out = ["#!/bin/sh", f"# imgbuild late script for recipe {q(recipe.name)}", "set -eu", ""]
    for index, user in enumerate(recipe.users):
        home = f"/home/{user.name}"
        out.append(f"# user {user.name}")
        if index > 0:
            out.append(f"id -u {q(user.name)} >/dev/null 2>&1 || useradd -m -s {q(user.shell)} "
                       f"-c {q(user.full_name)} {q(user.name)}")
            hashed = inputs.password_hashes.get(user.name)
            out.append(f"usermod -p {q(hashed or '!')} {q(user.name)}")
        else:
            out.append(f"usermod -s {q(user.shell)} {q(user.name)}")
        if user.sudo:
            out.append(f"usermod -aG sudo {q(user.name)}")
            if inputs.password_hashes.get(user.name) is None:
                rule = f"{user.name} ALL=(ALL) NOPASSWD:ALL"
                path = f"/etc/sudoers.d/90-imgbuild-{user.name}"
                out.append(f"printf '%s\\n' {q(rule)} > {q(path)} && chmod 0440 {q(path)}")
        else:
            out.append(f"gpasswd -d {q(user.name)} sudo >/dev/null 2>&1 || true")
        keys = inputs.keys_for(user.name, user.ssh_keys)
        if keys:
            out.append(f"install -d -m 0700 -o {q(user.name)} -g {q(user.name)} {q(home + '/.ssh')}")
            out.append(f": > {q(home + '/.ssh/authorized_keys')}")
            for key in keys:
                out.append(f"printf '%s\\n' {q(key)} >> {q(home + '/.ssh/authorized_keys')}")
            out.append(f"chown {q(user.name)}: {q(home + '/.ssh/authorized_keys')}")
            out.append(f"chmod 0600 {q(home + '/.ssh/authorized_keys')}")
        out.append("")
    out += [
        "# Networking belongs to cloud-init from the first boot on (it matches the NIC by MAC).",
        "printf 'auto lo\\niface lo inet loopback\\n\\nsource /etc/network/interfaces.d/*\\n' > /etc/network/interfaces",
        "",
        "# The recipe's late_commands, once (cloud-init's first boot skips them when this marker exists).",
        f"install -d -m 0755 {LATE_DIR}",
        f"echo {base64.b64encode(user_commands_script(recipe).encode()).decode()} | base64 -d > {LATE_COMMANDS}",
        f"sh -e {LATE_COMMANDS}",
        f"touch {LATE_DONE}",
    ]
    return "\n".join(out) + "\n"


def late_command_line(recipe: Recipe, inputs: RenderInputs) -> str:
    """The value of ``preseed/late_command``: only base64 characters come from the recipe."""
    payload = base64.b64encode(late_script(recipe, inputs).encode()).decode()
    return (f"in-target sh -c 'echo {payload} | base64 -d > /root/imgbuild-late.sh'; "
            "in-target sh -e /root/imgbuild-late.sh; in-target rm -f /root/imgbuild-late.sh")
