"""`m3search info`: what an index holds: model, counts, sizes per component, format version."""
from __future__ import annotations

import json

import click

from m3search.cli.common import INDEX_ENV


@click.command("info")
@click.argument("index_path", metavar="INDEX", envvar=INDEX_ENV, type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Everything the index reports, as JSON.")
def info_command(index_path, as_json):
    """Describe INDEX: model, counts, sizes per component, format version. [env: M3SEARCH_INDEX]"""
    from m3search import api

    with api.open_index(index_path) as index:
        info = index.info()
    if as_json:
        click.echo(json.dumps(info, indent=2, ensure_ascii=False))
        return
    for line in describe(info):
        click.echo(line)


def describe(info: dict) -> list[str]:
    enc = info.get("encoder", {})
    lines = [
        f"index       {info.get('path')}",
        f"format      {info.get('format')} version {info.get('format_version')} "
        f"(created {info.get('created_at')} by m3search {info.get('m3search_version')})",
        f"model       {info.get('model')}",
        f"encoder     {enc.get('name')}: dense {enc.get('dense_dim')}-d, multi-vector {enc.get('multivec_dim')}-d, "
        f"vocabulary {enc.get('vocab_size')}",
        f"sparse      terms {enc.get('sparse_terms', 'pieces')}, {enc.get('sparse_width') or enc.get('vocab_size')} columns",
        f"documents   {info.get('n_docs')}" + (f" (and {info['n_deleted']} deleted ones, dropped at the next merge)"
                                                 if info.get("n_deleted") else ""),
        f"segments    {info.get('n_segments')} (generation {info.get('generation')})",
        "components",
    ]
    for kind, comp in info.get("components", {}).items():
        lines.append(f"  {kind:<10}{human_bytes(comp.get('bytes', 0)):>10}  {_config(comp.get('config', {}))}")
        fidelity = ", ".join(f"{k}={_short(v)}" for k, v in (comp.get("fidelity") or {}).items())
        if fidelity:
            lines.append(f"  {'':<10}{'':>10}  fidelity: {fidelity}")
    lines.append(f"  {'documents':<10}{human_bytes(info.get('docstore_bytes', 0)):>10}  texts, ids and state (docs.lmdb)")
    lines.append(f"  {'total':<10}{human_bytes(info.get('total_bytes', 0)):>10}")
    defaults = info.get("search_defaults")
    if defaults:
        weights = ",".join(f"{c}={w:g}" for c, w in defaults["weights"].items())
        fusion = f", fusion rrf (k={defaults['rrf_k']:g})" if defaults.get("fusion") == "rrf" else ""
        tuned = defaults.get("provenance") or {}
        how = (f" (m3search tune, {tuned['metric']} on {tuned['n_queries']} queries, held out "
               f"{100 * tuned['held_out']:.1f} vs untuned {100 * tuned['held_out_baseline']:.1f}, {tuned.get('tuned_at')})"
               if {"metric", "n_queries", "held_out", "held_out_baseline"} <= set(tuned) else "")
        lines.append(f"search      {weights}{fusion}{how}")
    else:
        lines.append("search      built-in defaults (mode all: dense=1,sparse=0.3,multivec=1); fit them with `m3search tune`")
    return lines


def human_bytes(n: int | float) -> str:
    """1536 -> '1.5 KiB'."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def _config(config: dict) -> str:
    return ", ".join(f"{k}={_short(v)}" for k, v in config.items())


def _short(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return json.dumps(v, ensure_ascii=False) if isinstance(v, (dict, list)) else str(v)
