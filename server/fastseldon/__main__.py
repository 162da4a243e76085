"""``python -m fastseldon`` is the ``fastseldon`` command."""
import sys

from fastseldon.cli import main

sys.exit(main())
