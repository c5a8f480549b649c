"""Jinja2 templates of the model and dataset cards (package data, read by `training.hub.cards` through importlib.resources)."""
