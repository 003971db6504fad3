"""The pyroflows version, in a module of its own so that recipes can record it."""

__version__ = "0.1.0.dev0"
