"""Stage-2 training data: a seeded sample of the mined short pairs and of the mined mldr_like pairs."""
import gzip, json, random, sys
n_short, n_mldr = int(sys.argv[1]), int(sys.argv[2])
rows = [json.loads(l) for l in gzip.open("/work/cache/heads-s4/train_s4_mined.jsonl.gz", "rt")]
short = [r for r in rows if r["task"] != "mldr_like"]
mldr = [r for r in rows if r["task"] == "mldr_like"]
rng = random.Random(0)
pick = sorted(rng.sample(range(len(short)), n_short)) , sorted(rng.sample(range(len(mldr)), n_mldr))
out = [short[i] for i in pick[0]] + [mldr[i] for i in pick[1]]
with gzip.open(f"/work/cache/heads-s4/stage2_{n_short}_{n_mldr}.jsonl.gz", "wt", encoding="utf-8") as f:
    for r in out:
        f.write(json.dumps(r, ensure_ascii=False) + "\n")
print(len(out), sum(len(r["neg"]) for r in out) / len(out), len({p for r in out if r['task']=='mldr_like' for p in r['pos']}))
