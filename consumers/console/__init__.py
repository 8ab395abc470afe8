"""``events console``: an operator's web console, server-rendered (Flask, served by waitress).

Pages: every group (state, members, Kafka's LAG per partition with its trend, in flight, rates),
a group's dead letters (filter, look at one, redrive with a preview and a confirmation), the replay
form (the plan as ``events replay`` shows it, executed after a confirmation), the schema catalogue.
It reads and acts through ``consumers.recovery``, as the command line does. Its web dependencies are
the optional extra ``console`` (``pip install 'dify-events[console]'``).
"""

from .app import create_app
from .sampler import Sampler
from .state import ConsoleOptions

__all__ = ["ConsoleOptions", "Sampler", "create_app"]
