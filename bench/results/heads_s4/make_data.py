"""The training selection of the s4 heads: the shipped heads' 16k short pairs (same seeded selection) plus
every mldr_like train pair; a `mine_group` field partitions the mining (see notes/s4/heads.md)."""
import collections, gzip, json
from m3search.trainer.data import read_examples
from m3search.trainer.pipeline import select_examples
SRC = "/work/shared/data/train/pairs.jsonl.gz"
ex = read_examples(SRC)
short = select_examples(ex, {"task": {"miracl_like", "mkqa_like"}}, 16000, 0)
mldr = [e for e in ex if e.meta.get("task") == "mldr_like"]
docs = collections.defaultdict(set)
for e in mldr:
    docs[e.meta["lang"]].update(e.pos)
small = {l for l, d in docs.items() if len(d) < 40}
def group(e):
    t, l = e.meta["task"], e.meta["lang"]
    if t == "miracl_like":
        return f"miracl_like/{l}"   # keeps the positive's translations (other languages) out of the negatives
    if t == "mkqa_like":
        return "mkqa_like"          # English passages for every query language
    return f"mldr_like/{'small' if l in small else l}"
with gzip.open("/work/cache/heads-s4/train_s4.jsonl.gz", "wt", encoding="utf-8") as f:
    for e in [*short, *mldr]:
        d = e.to_dict() if hasattr(e, "to_dict") else None
        if d is None:
            d = {"query": e.query, "pos": list(e.pos), "neg": list(e.neg), **e.meta}
        d["mine_group"] = group(e)
        f.write(json.dumps(d, ensure_ascii=False) + "\n")
c = collections.Counter(group(e) for e in [*short, *mldr])
print(len(short), len(mldr), "small mldr langs:", sorted(small), {l: len(d) for l, d in docs.items()})
print(sorted(c.items()))
