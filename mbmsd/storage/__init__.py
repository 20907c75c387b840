"""
Pluggable storage: the reference in-memory stores, SQLite (the embedded
default) and, across nodes, PostgreSQL; one schema, one contract suite.
"""
