"""``vowvault doctor``: is this deployment's trust boundary what the docs say it is?

The tenant role (``vowvault_tenant``) reads whatever organization ``request.jwt.claims``
names, and any session may set that setting: so only the gateway that sets claims from a
verified JWT (PostgREST, Supabase) may hold it. Doctor lists every login role that holds it,
directly or through other roles, and fails when one is not a gateway role of the service
configuration (``tenant_gateway_roles``). It also fails on a PostgreSQL catalog whose
policies are not held to service rules (no ``organizations`` in the service configuration),
and warns when the audit key is each host's own rather than a shared secret.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa

from vowvault.engine.context import Context

TENANT_ROLE = "vowvault_tenant"

_HOLDERS = sa.text("""
    WITH RECURSIVE holders(roleid) AS (
        SELECT oid FROM pg_roles WHERE rolname = :role
        UNION
        SELECT m.member FROM pg_auth_members m JOIN holders h ON m.roleid = h.roleid)
    SELECT r.rolname, r.rolsuper, r.rolbypassrls FROM pg_roles r
    JOIN holders h ON r.oid = h.roleid
    WHERE r.rolcanlogin ORDER BY r.rolname
""")


@dataclass
class Finding:
    ok: bool
    check: str
    detail: str


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.findings)

    def add(self, ok: bool, check: str, detail: str) -> None:
        self.findings.append(Finding(ok, check, detail))


def run(ctx: Context) -> Report:
    report = Report()
    rules = ctx.rules
    if ctx.settings.is_embedded:
        report.add(True, "tenant role", "embedded SQLite catalog: no tenant logins")
        report.add(True, "service rules", "embedded: the operator's policy file is trusted"
                   + (f" (rules from {rules.path} apply)" if rules.enforced else ""))
        return report
    with ctx.catalog.read() as s:
        holders = s.execute(_HOLDERS, {"role": TENANT_ROLE}).all()
    gateways = set(rules.tenant_gateway_roles)
    for name, superuser, bypass in holders:
        if name in gateways:
            report.add(True, "tenant role", f"{name} holds {TENANT_ROLE}: a configured "
                                            f"gateway role")
        else:
            report.add(False, "tenant role",
                       f"login role {name} holds {TENANT_ROLE} but is not a gateway role "
                       f"(tenant_gateway_roles in the service configuration): any session "
                       f"of it can set request.jwt.claims to any organization; revoke it "
                       f"or add it if it is the gateway")
        if superuser or bypass:
            report.add(False, "tenant role", f"{name} is a superuser or bypasses row-level "
                                             f"security: it sees every organization")
    if not holders:
        report.add(True, "tenant role", f"no login role holds {TENANT_ROLE}")
    if rules.enforced:
        report.add(True, "service rules", f"policies held to {rules.path} "
                                          f"({len(rules.organizations)} organizations)")
    else:
        report.add(False, "service rules",
                   "PostgreSQL catalog without service rules: tenants' policy rows decide "
                   "what the service reads, writes and connects to; write a service "
                   "configuration with organizations (docs/SECURITY.md)")
    report.add(True, "audit key", "shared secret " + rules.audit_key if rules.audit_key else
               f"this host's own ({ctx.settings.home / 'audit.key'}): every worker "
               f"writing to this catalog needs the same key; set audit_key in the service "
               f"configuration")
    return report
