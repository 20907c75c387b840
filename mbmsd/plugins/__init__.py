"""
mbmsd's plugin package: roles, storage backends and metrics exporters.

Third parties add their own by shipping a module in C{mbmsd/plugins/} on
another sys.path entry (no __init__.py there), exactly as with
C{twisted/plugins/}.
"""

from twisted.plugin import pluginPackagePaths

__path__.extend(pluginPackagePaths(__name__))
__all__ = []
