"""Prefect tasks: each decodes its arguments, calls ONE core function, returns something
small (ids, byte counts). No business logic lives here.

Importing this package registers Prefect Secret blocks as named secrets and as a key
provider: a worker loads a flow's file by its path, so ``flows/__init__.py`` (which does
the same) has not run in a deployment's flow run, and every flow imports tasks.
"""

from blocks import register as _register_blocks

_register_blocks()
