"""imgbuild: turn a short YAML recipe into a running, verified Debian virtual machine."""

__version__ = "0.1.0"
