"""Helpers of the evaluation tests: writing small benchmark files."""
from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

WORDS = {
    "en": "apple banana cherry delete column row table chart print page font color save file open macro".split(),
    "de": "apfel banane kirsche löschen spalte zeile tabelle diagramm drucken seite schrift farbe speichern".split(),
}


def write_jsonl(path: Path, rows: list[dict], gz: bool = False) -> Path:
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    if gz:
        path.write_bytes(gzip.compress(text.encode("utf-8")))
    else:
        path.write_text(text, encoding="utf-8")
    return path


def make_passages(lang: str, n: int, seed: int) -> list[dict]:
    rnd = random.Random(seed)
    words = WORDS[lang]
    return [
        {"docid": f"{lang}{i}#0", "title": f"{words[i % len(words)]} title",
         "text": " ".join(rnd.choice(words) for _ in range(12)) + f" unique{lang}{i}"}
        for i in range(n)
    ]
