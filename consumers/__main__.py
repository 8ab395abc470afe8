"""``python -m consumers ...`` is the ``events`` command (what ``events run --all`` spawns per group)."""

from consumers.cli import main

main()
