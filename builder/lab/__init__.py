"""The lab: a host description's network built in network namespaces on this machine (`imgbuild lab`).

plan.py works out the namespaces and cables (pure), up.py builds them and applies the rendered
/etc/network/interfaces with ifupdown2, down.py removes them (also after a crash), status.py reports.
The `lab` target (builder/targets/local, network backend ``lab``) puts guests' NICs on its bridges.
"""
