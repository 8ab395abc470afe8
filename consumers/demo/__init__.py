"""``events demo``: the platform's main job end to end, on one machine.

``workload``     what Dify's application does in a busy hour, as data (rows, events, poison), from a seed
``application``  plays a workload as the application would: rows and outbox rows in one transaction,
                 or rows then the producer SDK; the outbox relay; poison straight onto a topic
``cluster``      the cluster (configured, or the local broker), the topics, one process per group
``progress``     what the groups have done: handled, lag, dead letters, duplicates
``checks``       the database's invariants, the demo's own checks, and a digest of the domain tables
``report``       the live progress table and the summary
``run``          the orchestration: ``Demo(options).run()`` -> exit code
``postgres``     a throwaway PostgreSQL server (``--postgres``, and the tests' server)
"""
