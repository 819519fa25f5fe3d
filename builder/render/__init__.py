"""Rendering: a typed recipe (plus its resolved secrets) in, file contents out. Pure; no I/O here
except reading the Jinja2 templates. ``builder.render.write`` puts the results on disk."""
