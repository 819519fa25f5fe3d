"""Secrets a recipe needs at render time: password hashes and SSH key pairs, persisted in out/RECIPE/."""
