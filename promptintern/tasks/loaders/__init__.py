"""Dataset loaders, one function per dataset; importing this package registers them all."""

from . import mbpp, nl2bash, others, records  # noqa: F401
