"""
The C{memory} backend as a plugin (tests and throwaway labs: nothing survives
a restart).
"""

from typing import Any

from zope.interface import implementer

from mbmsd import config as c
from mbmsd.interfaces import IStorageFactory
from mbmsd.storage.memory import MemoryStorage


@implementer(IStorageFactory)
class MemoryStorageFactory:
    name = "memory"
    configSchema = c.Section()

    def open(self, config: dict[str, Any], reactor: Any) -> MemoryStorage:
        return MemoryStorage()
