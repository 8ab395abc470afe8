"""Recovery: make a consumer group read events again, and look at and re-drive its dead letters.

    plan.py          what a replay re-reads: per partition, from/to offsets; rewind or copy
    replay.py        carrying a plan out: set a stopped group's offsets back, or copy the range
    copier.py        copies into a group's private retry topic (plain, or in transactions)
    dead_letters.py  a group's dead letters read back: facts from headers, selections
    ledger.py        the record of what was re-driven (a compacted topic), so nothing goes twice
    redrive.py       dead letters copied into the retry topic with their ledger records
    kafka.py         the admin and reader calls these need
    times.py         --since/--until values; positions.py: --from-offsets values

The command line is ``events replay`` (``consumers/cli/replay.py``) and ``events dlq``
(``consumers/cli/dlq.py``).
"""
