"""vowvault: policy-driven, encrypted, verified backups.

Vocabulary used across the core library:

- *Organization*: a tenant (a photographer, a venue, a florist, or the platform itself).
- *Policy*: what to back up, when, where to, and for how long (declared in YAML).
- *Backup* (a ``backup_jobs`` row): one run of a policy and what it produced.
- *Target*: a storage location (``file://``, ``s3://``, ``gs://``, ``az://``) with a tier.
- *Tier*: HOT, WARM, COLD, ARCHIVE, DEEP_ARCHIVE.

The core never imports Prefect, Typer or Rich: those live in ``flows/``, ``tasks/`` and
``vowvault.cli``.
"""

__version__ = "0.1.0"
