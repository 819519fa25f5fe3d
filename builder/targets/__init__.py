"""Where VMs run: the local QEMU target and Proxmox VE, behind one interface (targets.base.Target)."""
