"""docs/hosts.md, generated from host.schema.json like docs/recipes.md from the recipe schema.

Regenerate with: python -m builder.hostnet.docs > docs/hosts.md  (a test checks it is current)
"""

from __future__ import annotations

from builder.hostnet import host_schema
from builder.recipe.docs import schema_markdown

HEADER = """\
# Host network description reference

<!-- Generated from builder/hostnet/host.schema.json by `python -m builder.hostnet.docs`; do not edit. -->

A host description is a YAML file in `recipes/hosts/` describing the network of one Proxmox VE node.
`imgbuild host-net render HOST` prints its `/etc/network/interfaces`; `imgbuild lab up HOST` builds it in network
namespaces on this machine. Point your editor at the JSON Schema: `# yaml-language-server:
$schema=../../builder/hostnet/host.schema.json` (first line of the shipped examples). Problems are reported all at
once as `FILE:LINE: field.path: message` (exit status 2): overlapping subnets, a gateway outside its subnet, a NIC
used twice, a bond with one member, a VLAN id outside 1-4094, unknown interfaces and more.

`NAME` stands for an interface name you choose (`eno1`, `bond0`, `vmbr0`): at most 15 characters, a letter first.

"""


def hosts_markdown() -> str:
    return schema_markdown(host_schema(), HEADER)


if __name__ == "__main__":
    print(hosts_markdown(), end="")
