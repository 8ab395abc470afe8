"""Consumers the benchmark compares, each a script run as a child process: it reads a JSON
configuration (path in ``argv[1]``: bootstrap, topic, group, expect, schemas, options), consumes
``expect`` events of the topic from the beginning with a fresh group, decodes each, and prints one
JSON line: ``{"n", "first_ns", "last_ns", "vm_hwm_kib", ...}``, the clock running from its first
event to its last. They import nothing of this project, so that the peers run in their own
virtualenvs (``bench/.venvs/``) with their own pins."""
