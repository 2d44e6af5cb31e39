"""Prefect tasks: each decodes its arguments, calls ONE core function, returns something
small (ids, byte counts). No business logic lives here."""
