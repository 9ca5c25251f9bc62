"""Metrics, registered by name; importing this package registers them all."""

from . import code_exec, text  # noqa: F401
