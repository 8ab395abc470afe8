"""``python -m dify_events.consumers ...`` is the ``events`` command (what ``events run --all`` spawns per group)."""

from dify_events.consumers.cli import main

main()
