"""Policy templates by vendor type: a commented policy file per trade, with a sound strategy
for it (what to back up, how often, how many copies, tiers, retention, wedding days).

A template is package data (``<vendor>.yaml`` beside this module) with three placeholders,
replaced as plain text: ``{org}`` (the organization's slug), ``{name}`` (its display name)
and ``{file}`` (the file it is written to, for the commands in its header). Every path and
URL in a template has a default under ``${VOWVAULT_HOME}``, so a rendered file validates and
runs on the embedded default as written; each source also names the environment variable
that points it at real data (``${PHOTO_ORIGINALS:-...}``). Why each choice: docs/TEMPLATES.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml
from pydantic import TypeAdapter, ValidationError

from vowvault.errors import ConfigError
from vowvault.policies.loader import parse_policy_text
from vowvault.policies.spec import DirectorySource, PolicyFile, Slug
from vowvault.policies.vendors import DEFAULT_ORG, VENDORS

MAX_NAME = 63
"""Longest slug (organizations and policy names; see ``spec.Slug``)."""

_OVERRIDE = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*):-")
_SLUG = TypeAdapter(Slug)


@dataclass(frozen=True)
class TemplateSource:
    """One policy's source in a rendered template: a directory or a database."""

    policy: str
    kind: str
    """``directory`` or ``postgres``."""
    path: Path | None
    """A directory source's path, as the environment expands it."""
    dsn: str | None
    """A PostgreSQL source's connection string, as the environment expands it."""
    variable: str | None
    """The environment variable that overrides the default (``PHOTO_ORIGINALS``)."""


def template_text(vendor: str) -> str:
    """The raw template of a vendor type (placeholders not yet replaced)."""
    check_vendor(vendor)
    return (resources.files(__name__) / f"{vendor}.yaml").read_text(encoding="utf-8")


def check_vendor(vendor: str) -> str:
    """The vendor type, or ``ConfigError`` listing the valid ones."""
    if vendor not in VENDORS:
        raise ConfigError(f"no policy template for vendor type {vendor!r}: choose one of "
                          + ", ".join(VENDORS))
    return vendor


def max_org_length(vendor: str) -> int:
    """The longest organization slug whose policy names still fit ``MAX_NAME``."""
    suffixes = re.findall(r"^\s*- name: \{org\}(\S*)", template_text(vendor), re.MULTILINE)
    return MAX_NAME - max(len(s) for s in suffixes)


def check_org(vendor: str, org_slug: str) -> str:
    """The slug, or ``ConfigError`` saying what a slug may be (the policy file's own rule,
    and short enough for the template's policy names)."""
    longest = max_org_length(vendor)
    rule = (f"lower-case letters, digits and dashes, starting with a letter or digit, at "
            f"most {longest} characters for the {vendor} template's policy names")
    try:
        _SLUG.validate_python(org_slug)
    except ValidationError:
        raise ConfigError(f"organization slug {org_slug!r} is not valid: use {rule}") from None
    if len(org_slug) > longest:
        raise ConfigError(f"organization slug {org_slug!r} is {len(org_slug)} characters "
                          f"long: use {rule}")
    return org_slug


def render(vendor: str, org_slug: str | None = None, file: str = "policies.yaml") -> str:
    """The template of ``vendor`` for the organization ``org_slug`` (``DEFAULT_ORG`` when
    None); ``file`` is the name its header's commands use. Raises ``ConfigError`` for an
    unknown vendor or a slug that cannot be one."""
    check_vendor(vendor)
    org = check_org(vendor, DEFAULT_ORG[vendor] if org_slug is None else org_slug)
    name = " ".join(word.capitalize() for word in org.split("-") if word)
    return (template_text(vendor).replace("{org}", org).replace("{name}", name)
            .replace("{file}", file))


def parse(text: str, name: str = "policies.yaml",
          env: Mapping[str, str] | None = None) -> PolicyFile:
    """A rendered template, validated as ``vowvault policies validate`` would."""
    return parse_policy_text(text, name, env)


def sources(text: str, env: Mapping[str, str] | None = None,
            name: str = "policies.yaml") -> list[TemplateSource]:
    """Every policy's source in a rendered template, expanded by ``env`` (the process
    environment when None), with the variable that overrides its default; ``PolicyError``
    (naming the file ``name``) when the file does not validate."""
    parsed = parse(text, name, env)
    raw = yaml.safe_load(text)
    variables = {}
    for policy in raw.get("policies") or []:
        source = policy.get("source") or {}
        match = _OVERRIDE.match(str(source.get("path") or source.get("dsn") or ""))
        variables[policy["name"]] = match.group(1) if match else None
    out = []
    for p in parsed.policies:
        src = p.source
        path, dsn = (Path(src.path), None) if isinstance(src, DirectorySource) else \
            (None, src.dsn)
        out.append(TemplateSource(policy=p.name, kind=src.kind, path=path, dsn=dsn,
                                  variable=variables.get(p.name)))
    return out


def source_dirs(text: str, env: Mapping[str, str] | None = None) -> list[TemplateSource]:
    """The directory sources of a rendered template (``sources`` of kind directory)."""
    return [s for s in sources(text, env) if s.kind == "directory"]
