"""The Proxmox VE target: VMs on a PVE node through its API (see target.py; connect.py opens one by name)."""
