"""The Prefect side of vowvault that is neither a flow nor a task: Prefect Secret blocks as
named secrets and as a key provider (``prefect_blocks``). Like ``cli``, a face of the core:
nothing in the core imports it."""
