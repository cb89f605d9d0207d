"""Expand a Grafana PostgreSQL panel query the way Grafana does before it reaches the database.

Mirrors Grafana's postgres datasource: template variables are interpolated first (a
multi-value or include-all variable becomes a list of quoted literals, a single-value
variable is inserted raw), then the ``$__`` macros are expanded.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

_INTERVAL = re.compile(r"^(\d+)(ms|s|m|h|d)$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def interval_seconds(interval: str) -> float:
    match = _INTERVAL.match(interval.strip().strip("'\""))
    if not match:
        raise ValueError(f"unsupported Grafana interval {interval!r}")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def interpolate(sql: str, variables: Mapping[str, str | Sequence[str]], multi: set[str]) -> str:
    def value_of(name: str) -> str:
        value = variables[name]
        if isinstance(value, str):
            return quote_literal(value) if name in multi else value
        return ",".join(quote_literal(v) for v in value)

    # Longest names first, so $brand does not eat the front of $brands.
    for name in sorted(variables, key=len, reverse=True):
        for pattern in (f"${{{name}}}", f"[[{name}]]", f"${name}"):
            sql = sql.replace(pattern, value_of(name))
    return sql


def _rfc3339(stamp: datetime) -> str:
    return stamp.strftime("%Y-%m-%dT%H:%M:%SZ")


def _args(text: str) -> list[str]:
    return [a.strip() for a in text.split(",")]


def expand_macros(sql: str, start: datetime, end: datetime, interval: str) -> str:
    sql = sql.replace("$__interval_ms", str(int(interval_seconds(interval) * 1000)))
    sql = sql.replace("$__interval", interval)
    frm, to = quote_literal(_rfc3339(start)), quote_literal(_rfc3339(end))

    def group(args: list[str]) -> str:
        seconds = interval_seconds(args[1])
        step = int(seconds) if seconds == int(seconds) else seconds
        return f"floor(extract(epoch from {args[0]})/{step})*{step}"

    macros: dict[str, Callable[[list[str]], str]] = {
        "__timeFilter": lambda a: f"{a[0]} BETWEEN {frm} AND {to}",
        "__timeFrom": lambda a: frm,
        "__timeTo": lambda a: to,
        "__time": lambda a: f'{a[0]} AS "time"',
        "__timeEpoch": lambda a: f'extract(epoch from {a[0]}) AS "time"',
        "__timeGroup": group,
        "__timeGroupAlias": lambda a: group(a) + ' AS "time"',
        "__unixEpochFilter": lambda a: (
            f"{a[0]} >= {int(start.timestamp())} AND {a[0]} <= {int(end.timestamp())}"
        ),
    }
    pattern = re.compile(r"\$(__\w+)\(([^()]*)\)")

    def replace(match: re.Match[str]) -> str:
        name, args = match.group(1), match.group(2)
        if name not in macros:
            raise ValueError(f"macro ${name} is not supported by this expander")
        return macros[name](_args(args))

    expanded = pattern.sub(replace, sql)
    if "$" in expanded.replace("$$", ""):
        leftover = re.findall(r"\$\w+", expanded)
        if leftover:
            raise ValueError(f"unexpanded Grafana variables or macros: {leftover}")
    return expanded
