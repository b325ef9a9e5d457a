"""wqscan: keep an SQLite ingestion queue in step with directory trees by polling.

The Python API mirrors the command line: `wqscan.store.Store` opens a database,
`wqscan.watches` registers trees, `wqscan.reconcile.reconcile` scans them.
"""
__version__ = "0.1.0"
