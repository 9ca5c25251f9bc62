"""``python -m promptintern.cli``: the same as the ``promptintern`` command."""

import sys

from . import main

sys.exit(main())
