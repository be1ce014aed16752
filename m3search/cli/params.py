"""`--param SOURCE.NAME=VALUE`: per-query search knobs of the candidate sources, e.g. multivec.nprobe=16."""
from __future__ import annotations

import json

import click

from m3search.planner.candidates import SOURCES


def parse_params(specs: tuple[str, ...]) -> dict[str, dict] | None:
    """{'multivec': {'nprobe': 16}, ...} from ('multivec.nprobe=16', ...); values are JSON (numbers, true,
    strings), else taken as text. A malformed spec is a usage error naming it."""
    out: dict[str, dict] = {}
    for spec in specs:
        key, sep, value = spec.partition("=")
        source, dot, name = key.strip().partition(".")
        if not sep or not dot or not name or source not in SOURCES:
            raise click.UsageError(
                f"--param {spec!r} must look like SOURCE.NAME=VALUE with SOURCE one of {', '.join(SOURCES)}, "
                "e.g. --param multivec.nprobe=16"
            )
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = value
        out.setdefault(source, {})[name.strip()] = parsed
    return out or None


param_option = click.option(
    "--param", "param_specs", multiple=True, metavar="SOURCE.NAME=VALUE",
    help="A candidate source's search knob, repeatable: multivec.nprobe (centroids probed per query token), "
         "multivec.candidates (documents scored from full codes), multivec.mean_candidates (documents added "
         "by mean-vector score, 0: off), multivec.pool, dense.nprobe, ...",
)
