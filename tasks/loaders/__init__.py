"""Dataset loaders, one module per dataset; importing this package registers them all."""

from . import mbpp, nl2bash  # noqa: F401
