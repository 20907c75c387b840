"""
The built-in plugins. Importing this module is cheap: each factory imports its
implementation only when a node uses it.
"""

from mbmsd.metrics.otlp import OtlpExporterFactory
from mbmsd.metrics.prometheus import PrometheusExporterFactory
from mbmsd.roles.bmsc.plugin import BmscRoleFactory
from mbmsd.roles.bsf.plugin import BsfRoleFactory
from mbmsd.roles.pcscf.plugin import PcscfRoleFactory
from mbmsd.roles.scf.plugin import ScfRoleFactory
from mbmsd.storage.plugin import MemoryStorageFactory
from mbmsd.storage.postgresql import PostgresStorageFactory
from mbmsd.storage.sqlite import SqliteStorageFactory

bsf = BsfRoleFactory()
bmsc = BmscRoleFactory()
pcscf = PcscfRoleFactory()
scf = ScfRoleFactory()
memory = MemoryStorageFactory()
sqlite = SqliteStorageFactory()
postgresql = PostgresStorageFactory()
prometheus = PrometheusExporterFactory()
otlp = OtlpExporterFactory()
