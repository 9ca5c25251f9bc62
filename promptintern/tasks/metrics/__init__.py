"""Metrics, registered by name; importing this package registers them all."""

from . import choice_sql_formula, code_exec, generic, math_answers, text  # noqa: F401
