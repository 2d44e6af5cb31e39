"""The engine: backup, verify, restore (and later lifecycle, retention, erasure, drills).

It uses the catalog, storage, codec, sources and keys; it never imports Prefect or the CLI.
Long work reports progress through a callback and logs to the ``vowvault`` logger.
"""
