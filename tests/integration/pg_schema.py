"""Describe a PostgreSQL schema as comparable data: every table, column, constraint, index,
view, function, trigger, policy, enum, grant and RLS flag of the catalog."""

from __future__ import annotations

from typing import Any

import psycopg

QUERIES: dict[str, str] = {
    "columns": """
        SELECT table_schema, table_name, column_name, ordinal_position, data_type, udt_name,
               is_nullable, column_default, character_maximum_length, numeric_precision,
               numeric_scale
        FROM information_schema.columns WHERE table_schema IN ('public', 'auth')""",
    "constraints": """
        SELECT conrelid::regclass::text, conname, contype, pg_get_constraintdef(oid)
        FROM pg_constraint WHERE connamespace = 'public'::regnamespace""",
    "indexes": """
        SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'""",
    "views": """
        SELECT c.relname, pg_get_viewdef(c.oid, true), coalesce(c.reloptions::text, '')
        FROM pg_class c WHERE c.relkind = 'v' AND c.relnamespace = 'public'::regnamespace""",
    "functions": """
        SELECT n.nspname, p.proname, pg_get_function_identity_arguments(p.oid),
               pg_get_functiondef(p.oid), coalesce(obj_description(p.oid, 'pg_proc'), '')
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname IN ('public', 'auth') AND p.prokind IN ('f', 'p')""",
    "triggers": """
        SELECT tgrelid::regclass::text, tgname, pg_get_triggerdef(oid)
        FROM pg_trigger WHERE NOT tgisinternal""",
    "policies": """
        SELECT tablename, policyname, permissive, roles::text, cmd, coalesce(qual, ''),
               coalesce(with_check, '')
        FROM pg_policies WHERE schemaname = 'public'""",
    "enums": """
        SELECT t.typname, e.enumsortorder, e.enumlabel
        FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid""",
    "rls": """
        SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class
        WHERE relnamespace = 'public'::regnamespace AND relkind = 'r'""",
    "grants": """
        SELECT grantee, table_name, privilege_type FROM information_schema.role_table_grants
        WHERE grantee LIKE 'vowvault_%' AND table_schema = 'public'""",
    "sequences": """
        SELECT sequence_name, data_type, start_value, increment
        FROM information_schema.sequences WHERE sequence_schema = 'public'""",
}


def describe(url: str) -> dict[str, set[tuple[Any, ...]]]:
    with psycopg.connect(url) as conn:
        return {name: {tuple(row) for row in conn.execute(sql)}
                for name, sql in QUERIES.items()}


def differences(a: dict[str, set[tuple[Any, ...]]],
                b: dict[str, set[tuple[Any, ...]]]) -> list[str]:
    out = []
    for name in QUERIES:
        for row in sorted(a[name] - b[name], key=repr):
            out.append(f"{name}: only in first: {row}")
        for row in sorted(b[name] - a[name], key=repr):
            out.append(f"{name}: only in second: {row}")
    return out
