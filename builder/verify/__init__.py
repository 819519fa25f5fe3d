"""Verification: prove a guest does what its recipe says (SSH with a pinned host key, HTTP, services, desktop)."""
