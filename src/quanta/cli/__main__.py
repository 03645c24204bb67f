"""``python -m quanta.cli …`` is ``quanta …``."""

from quanta.cli import main

main()
