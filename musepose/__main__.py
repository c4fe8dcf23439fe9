"""``python -m musepose``: see musepose/cli.py."""
import sys

from .cli import main

sys.exit(main())
