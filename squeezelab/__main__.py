"""``python -m squeezelab`` (and ``torchrun -m squeezelab train ...``) runs the CLI."""
import sys

from squeezelab.cli import main

sys.exit(main())
