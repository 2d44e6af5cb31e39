"""Prefect flows: they order tasks and set retries; the work is in ``vowvault``."""
