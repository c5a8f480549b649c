"""Jinja2 templates of the model and dataset cards (package data, read by `mlpl.hub.cards` through importlib.resources)."""
