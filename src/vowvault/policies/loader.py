"""Reading policy files: YAML with line numbers, ``${VAR}`` expansion, one-line errors.

Every error names the file and line, the policy, the field, and what to change, e.g.::

    policies.yaml:21: policy 'venue-db': field schedule.cron: invalid cron '61 2 * * *' ...
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from vowvault.errors import PolicyError
from vowvault.policies.spec import PolicyFile, RefError
from vowvault.settings import default_home

Loc = tuple[str | int, ...]
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_VAR = re.compile(r"\$\{(" + _NAME + r")(?::-((?:[^{}]|\$\{" + _NAME + r"\})*))?\}")
"""``${NAME}`` or ``${NAME:-default}``; a default may itself hold ``${OTHER}`` (one level),
as in ``${LUMIERE_PHOTOS:-${VOWVAULT_HOME}/demo/lumiere-photos}``."""

MAX_BYTES = 16 << 20
"""A policy file larger than this is refused (thousands of policies fit in far less)."""
MAX_NODES = 1_000_000
"""Values a file may expand to, aliases counted each time they are used: an alias bomb (a
few lines that expand to billions of values) is refused instead of filling memory."""
MAX_DEPTH = 64


def load_policy_file(path: str | Path, env: Mapping[str, str] | None = None) -> PolicyFile:
    """Parse and validate a policy file; raise ``PolicyError`` with a one-line message."""
    path = Path(path)
    name = str(path)
    try:
        if path.stat().st_size > MAX_BYTES:
            raise PolicyError(f"is larger than {MAX_BYTES >> 20} MiB; split it", file=name)
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PolicyError("no such file", file=name) from None
    except UnicodeDecodeError as exc:
        raise PolicyError(f"is not a UTF-8 text file (byte {exc.start}): give a YAML policy "
                          f"file", file=name) from None
    except OSError as exc:
        raise PolicyError(f"cannot read: {exc.strerror or exc}", file=name) from None
    return parse_policy_text(text, name, env)


def parse_policy_text(text: str, name: str = "<policies>",
                      env: Mapping[str, str] | None = None) -> PolicyFile:
    env = os.environ if env is None else env
    if "VOWVAULT_HOME" not in env:  # always defined: the examples' paths live under it
        env = {**env, "VOWVAULT_HOME": str(default_home())}
    if len(text) > MAX_BYTES:
        raise PolicyError(f"is larger than {MAX_BYTES >> 20} MiB; split it", file=name)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except RecursionError:
        raise PolicyError(f"nests deeper than {MAX_DEPTH} levels", file=name) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise PolicyError(f"not valid YAML: {problem}", file=name,
                          line=mark.line + 1 if mark else None) from None
    if node is None:
        raise PolicyError("is empty; it needs at least 'policies:'", file=name)
    lines: dict[Loc, int] = {}
    data = _build(node, (), lines, name, env, yaml.SafeLoader(""), [MAX_NODES])
    if not isinstance(data, dict):
        raise PolicyError("must be a mapping with 'organizations:' and 'policies:'", file=name)
    try:
        return PolicyFile.model_validate(data)
    except ValidationError as exc:
        raise _policy_error(exc, data, lines, name) from None


def _build(node: yaml.Node, loc: Loc, lines: dict[Loc, int], name: str,
           env: Mapping[str, str], scalars: yaml.SafeLoader, budget: list[int]) -> Any:
    """YAML node -> plain data, recording the line of every location, refusing duplicate
    keys (YAML would silently keep the last one), expanding ``${VAR}``, and refusing a file
    that expands to more than ``MAX_NODES`` values or nests deeper than ``MAX_DEPTH``."""
    budget[0] -= 1
    if budget[0] < 0:
        raise PolicyError(f"expands to more than {MAX_NODES} values (an alias bomb?)",
                          file=name, line=node.start_mark.line + 1)
    if len(loc) > MAX_DEPTH:
        raise PolicyError(f"nests deeper than {MAX_DEPTH} levels", file=name,
                          line=node.start_mark.line + 1)
    lines[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in out:
                raise PolicyError(f"key {key!r} appears twice", file=name,
                                  line=key_node.start_mark.line + 1,
                                  field=_dotted((*loc, key)) if loc else None)
            out[key] = _build(value_node, (*loc, key), lines, name, env, scalars, budget)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, (*loc, i), lines, name, env, scalars, budget)
                for i, item in enumerate(node.value)]
    value = scalars.construct_object(node)
    if isinstance(value, str):
        return _expand(value, env, name, lines[loc], loc)
    return value


def _expand(value: str, env: Mapping[str, str], name: str, line: int, loc: Loc) -> str:
    def sub(match: re.Match[str]) -> str:
        var, default = match.group(1), match.group(2)
        if var in env:
            return env[var]
        if default is not None:
            return _VAR.sub(sub, default)
        raise PolicyError(f"environment variable {var} is not set (or give a default: "
                          f"${{{var}:-value}})", file=name, line=line, field=_dotted(loc))

    return _VAR.sub(sub, value)


def _policy_error(exc: ValidationError, data: dict[str, Any], lines: dict[Loc, int],
                  name: str) -> PolicyError:
    # A misspelt key also makes the real one "missing": report the misspelling first.
    errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
    err = errors[0]
    loc: Loc = tuple(err["loc"])
    cause = err.get("ctx", {}).get("error")
    if isinstance(cause, RefError):
        loc = cause.loc
    message = _describe(err, loc)
    more = len(exc.errors()) - 1
    if more:
        message += f" (and {more} more problem{'s' if more > 1 else ''}; -v lists them)"
    policy = None
    field_loc = loc
    if len(loc) >= 2 and loc[0] == "policies" and isinstance(loc[1], int):
        policies = data.get("policies") or []
        if loc[1] < len(policies) and isinstance(policies[loc[1]], dict):
            policy = str(policies[loc[1]].get("name") or f"#{loc[1] + 1}")
        field_loc = loc[2:]
    field_loc = tuple(p for p in field_loc if p not in ("postgres", "directory"))
    error = PolicyError(message, file=name, line=_line_of(loc, lines), policy=policy,
                        field=_dotted(field_loc) or None)
    error.details = [f"{name}:{_line_of(tuple(e['loc']), lines) or '?'}: "
                     f"{_dotted(tuple(e['loc']))}: {_describe(e, tuple(e['loc']))}"
                     for e in errors[1:]]
    return error


def _describe(err: Any, loc: Loc) -> str:
    kind = err["type"]
    value = err.get("input")
    if kind == "extra_forbidden":
        key = str(loc[-1])
        return f"unknown key {key!r}" + _suggest(key, loc)
    if kind == "missing":
        return "is required"
    if kind == "enum":
        return f"{value!r} is not one of {err['ctx']['expected']}"
    if kind == "literal_error":
        return f"{value!r} is not one of {err['ctx']['expected']}"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        bound = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=",
                 "less_than": "<"}[kind]
        limit = next(iter(err["ctx"].values()))
        return f"must be {bound} {limit}, not {value!r}"
    if kind == "string_pattern_mismatch":
        return (f"{value!r} must be lower-case letters, digits and dashes "
                f"(at most 63, starting with a letter or digit)")
    if kind == "union_tag_invalid":
        return f"kind {err['ctx']['tag']!r} is not one of {err['ctx']['expected_tags']}"
    if kind == "union_tag_not_found":
        return "needs 'kind:' (postgres or directory)"
    if kind == "value_error":
        return str(err["ctx"]["error"])
    return err["msg"][0].lower() + err["msg"][1:]


def _suggest(key: str, loc: Loc) -> str:
    fields = _fields_at(loc[:-1])
    close = difflib.get_close_matches(key, fields, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _fields_at(loc: Loc) -> list[str]:
    """The field names a model accepts at ``loc`` (for did-you-mean hints)."""
    model: Any = PolicyFile
    for part in loc:
        if isinstance(part, int) or part in ("postgres", "directory"):
            continue
        info = getattr(model, "model_fields", {}).get(part)
        if info is None:
            return []
        model = _model_of(info.annotation)
        if model is None:
            return []
    return list(getattr(model, "model_fields", {}))


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _line_of(loc: Loc, lines: dict[Loc, int]) -> int | None:
    loc = tuple(p for p in loc if p not in ("postgres", "directory"))
    while loc and loc not in lines:
        loc = loc[:-1]
    return lines.get(loc)


def _dotted(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
