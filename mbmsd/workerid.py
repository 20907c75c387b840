"""
Which worker of its node this process is (C{node.workers} > 1): the number
the supervisor (L{mbmsd.workers}) gives each worker in its environment. Its
own module, importing nothing of mbmsd, so that the logs can name the worker
and the workers can log.
"""

import os
from collections.abc import Mapping

__all__ = ["WORKER_ENV", "RESTARTS_ENV", "worker_number"]

WORKER_ENV = "MBMSD_WORKER"  # the worker number, 0 .. N - 1, in a worker process
# the file where the supervisor counts the workers it restarted
RESTARTS_ENV = "MBMSD_WORKER_RESTARTS"


def worker_number(environ: Mapping[str, str] = os.environ) -> int | None:
    """@return: this process's worker number, or None in a node without workers."""
    value = environ.get(WORKER_ENV)
    return int(value) if value is not None and value.isdigit() else None
