"""The document store reserves little address space and grows its map on demand (issue #10 item 7)."""
from __future__ import annotations

import resource
import subprocess
import sys

import m3search
from m3search.indexes import docstore

MODEL = "hashing:dim=16,vocab_size=3000"


def test_map_grows_on_demand_and_readers_follow(tmp_path, monkeypatch):
    monkeypatch.setattr(docstore, "MIN_MAP_SIZE", 1 << 20)
    path = tmp_path / "idx"
    reader_path = str(path)
    index = m3search.build_index(path, [("a", "alpha")], model=MODEL)
    reader = m3search.open_index(path)
    assert reader.search("alpha", k=1)[0].docid == "a"
    big = "lorem ipsum " * 2000  # 24 kB a document: 200 of them outgrow a 1 MiB map several times
    index.add([(f"d{i}", f"doc {i} {big}") for i in range(200)], batch_size=50)
    env = docstore.open_env(path)
    assert env.info()["map_size"] >= (path / "docs.lmdb" / "data.mdb").stat().st_size > 4 << 20
    docstore.release_env(env)
    index.close()
    assert reader.search("doc 7", k=1, mode="sparse")[0].docid == "d7"  # adopted the grown map
    reader.close()
    # another process opens it with a map of twice the file, not 1 TiB
    code = (f"import m3search; ix = m3search.open_index({reader_path!r}); "
            "print(len(ix), ix._index._env.info()['map_size'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert int(out[0]) == 201 and int(out[1]) < 1 << 30


def test_opens_under_a_virtual_memory_limit(tmp_path):
    path = tmp_path / "idx"
    m3search.build_index(path, [("a", "alpha")], model=MODEL).close()
    code = (
        "import resource; from m3search.indexes.index import Index\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_AS)\n"
        f"resource.setrlimit(resource.RLIMIT_AS, (64 << 30, hard))\n"  # 64 GiB: the 1 TiB map never fit
        f"ix = Index.open({str(path)!r}); print(ix.n_live); ix.close()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "1", out.stderr[-2000:]
    assert resource  # the limit is set in the child only
