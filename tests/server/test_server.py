"""The HTTP server: a real uvicorn on a free local port, raw HTTP through httpx."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest

import m3search
from helpers.live_server import serve
from m3search.client import RemoteError
from m3search.server.app import ServerSettings
from helpers.sample_docs import MODEL, sample_docs

DOCS = [dict(d, metadata={"lang": d["id"].split("-")[0], "n": i}) for i, d in enumerate(sample_docs("id"))]


@pytest.fixture
def index(tmp_path):
    idx = m3search.build_index(tmp_path / "idx", DOCS, model=MODEL)
    yield idx
    idx.close()


@pytest.fixture
def server(index):
    with serve(index, ServerSettings(max_k=50, max_body_bytes=64 << 10)) as url:
        with httpx.Client(base_url=url, timeout=30) as http:
            yield http


def test_health_info_and_openapi(server, index):
    assert server.get("/health").json()["status"] == "ok"
    info = server.get("/v1/info").json()
    assert info["n_docs"] == len(DOCS) and info["model"] == MODEL and info == index.info()
    spec = server.get("/openapi.json").json()
    assert {"/v1/search", "/v1/documents", "/v1/documents/delete", "/v1/encode", "/v1/info", "/health"} <= set(spec["paths"])
    assert server.get("/docs").status_code == 200


def test_search_answers_like_query_json(server, index):
    r = server.post("/v1/search", json={"queries": ["delete a column", "Navigator"], "k": 3, "offset": 1,
                                        "filter": {"lang": {"$ne": "zh"}}, "fields": ["metadata", "scores"]})
    assert r.status_code == 200
    results = r.json()["results"]
    assert [x["qid"] for x in results] == ["1", "2"] and results[0]["query"] == "delete a column"
    want = index.search_many(["delete a column", "Navigator"], k=3, offset=1, filter={"lang": {"$ne": "zh"}})
    for res, hits in zip(results, want):
        assert [h["docid"] for h in res["hits"]] == [h.docid for h in hits]
        assert [h["rank"] for h in res["hits"]] == [2, 3, 4]
        assert all("text" not in h and h["metadata"]["lang"] != "zh" for h in res["hits"])
        assert [h["score"] for h in res["hits"]] == pytest.approx([h.score for h in hits])


@pytest.mark.parametrize("body, status, field", [
    ({"queries": ["x"], "k": 0}, 422, "k"),
    ({"queries": ["x"], "k": 51}, 400, "k"),
    ({"queries": []}, 422, "queries"),
    ({"k": 3}, 422, "queries"),
    ({"queries": ["x"], "kk": 3}, 422, "kk"),
    ({"queries": ["x"], "offset": -1}, 422, "offset"),
    ({"queries": [3]}, 422, "queries.0"),
    ({"queries": ["x"], "filter": {"n": {"$gt": "a"}}}, 400, "filter.n.$gt"),
    ({"queries": ["x"], "filter": {"n": {"$near": 1}}}, 400, "filter.n.$near"),
    ({"queries": ["x"], "filter": {"nope": 1}}, 400, "filter.nope"),
    ({"queries": ["x"], "fields": ["txt"]}, 400, "fields"),
    ({"queries": ["x"], "mode": "dense", "weights": {"dense": 1}}, 400, "mode"),
    ({"queries": ["x"], "mode": "nonsense"}, 400, None),
    ({"queries": ["x"], "depths": 10**9}, 400, "depths"),
    ({"queries": ["x"], "depths": {"sparse": 10**9}}, 400, "depths.sparse"),
    ({"queries": ["x"], "params": {"multivec": {"mean_candidates": -1}}}, 400, "params.multivec.mean_candidates"),
    ({"queries": ["x"], "params": {"multivec": {"mean_candidates": 10**6}}}, 400, "params.multivec.mean_candidates"),
    ({"queries": ["x"], "params": {"colbert": {"nprobe": 4}}}, 400, "params"),
])
def test_bad_requests_name_the_field(server, body, status, field):
    r = server.post("/v1/search", json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["field"] == field and err["message"] and err["type"]
    if field:
        assert field in err["message"]


def test_search_params_reach_the_index(server, index):
    """The JSON request's per-source knobs are the API's params: the same hits, and a bad knob that only
    the index checks (nprobe) comes back as a 400."""
    body = {"queries": ["delete a column"], "k": 3, "mode": "multivec"}
    r = server.post("/v1/search", json={**body, "params": {"multivec": {"mean_candidates": 200, "nprobe": 4}}})
    want = index.search("delete a column", k=3, mode="multivec")
    assert r.status_code == 200 and [h["docid"] for h in r.json()["results"][0]["hits"]] == [h.docid for h in want]
    r = server.post("/v1/search", json={**body, "params": {"multivec": {"nprobe": 0}}})
    assert r.status_code == 400 and "nprobe" in r.json()["error"]["message"]


def test_bad_json_and_bad_documents(server):
    r = server.post("/v1/search", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["type"] == "ValidationError"
    assert r.json()["error"]["field"] == "body" and "JSON" in r.json()["error"]["message"]
    r = server.post("/v1/documents", json={"documents": [{"id": "a"}]})
    assert r.status_code == 422 and r.json()["error"]["field"] == "documents.0.text"
    r = server.post("/v1/documents", json={"documents": [{"id": "a", "text": "t"}, {"id": "a", "text": "u"}]})
    assert r.status_code == 400 and "duplicate id 'a'" in r.json()["error"]["message"]
    assert server.get("/v1/info").json()["n_docs"] == len(DOCS)  # nothing of the failed request was kept


def test_request_size_is_bounded(server):
    big = {"documents": [{"id": f"b{i}", "text": "x" * 1000} for i in range(100)]}  # ~100 kB > 64 kB
    r = server.post("/v1/documents", json=big)
    assert r.status_code == 413 and r.json()["error"]["field"] == "body"

    def chunks():  # no Content-Length: counted as it arrives
        for _ in range(100):
            yield b"x" * 1000

    r = server.post("/v1/search", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert server.get("/v1/info").json()["n_docs"] == len(DOCS)


def test_documents_add_upsert_delete(server, index):
    r = server.post("/v1/documents", json={"documents": [
        {"id": "new", "text": "pivot tables", "title": "Pivot", "metadata": {"lang": "en"}, "source": "wiki"},
        {"id": "en-1", "text": "skipped"}]})
    assert r.json() == {"added": 1, "skipped": 1, "replaced": 0, "generation": r.json()["generation"]}
    hit = server.post("/v1/search", json={"queries": ["pivot tables"], "k": 1}).json()["results"][0]["hits"][0]
    assert hit["docid"] == "new" and hit["metadata"] == {"lang": "en", "source": "wiki"} and hit["title"] == "Pivot"
    r = server.post("/v1/documents", json={"upsert": True, "documents": [{"id": "new", "text": "bar charts"}]})
    assert r.json()["replaced"] == 1
    assert server.post("/v1/documents/delete", json={"ids": ["new", "nope"]}).json() == {"deleted": 1}
    assert server.get("/v1/info").json()["n_docs"] == len(DOCS)


def test_encode_returns_the_three_representations(server, hashing_encoder):
    r = server.post("/v1/encode", json={"texts": ["open the navigator", "Zellen"], "kind": "query"})
    assert r.status_code == 200
    got = r.json()["results"]
    want = hashing_encoder.encode(["open the navigator", "Zellen"], kind="query")
    for i, g in enumerate(got):
        np.testing.assert_allclose(g["dense_vecs"], want.dense[i], rtol=1e-6)
        assert {int(t): w for t, w in g["lexical_weights"].items()} == pytest.approx(want.lexical_weights(i))
        assert set(g["tokens"]) == set(g["lexical_weights"])
        np.testing.assert_allclose(g["colbert_vecs"], want.token_vectors(i), rtol=1e-6)
    only = server.post("/v1/encode", json={"texts": ["x"], "outputs": ["dense"]}).json()["results"][0]
    assert set(only) == {"dense_vecs"}


def test_api_key_is_required_on_v1(index):
    with serve(index, ServerSettings(api_key="s3cret")) as url, httpx.Client(base_url=url) as http:
        assert http.get("/health").status_code == 200
        assert http.get("/v1/info").status_code == 401
        assert http.get("/v1/info", headers={"Authorization": "Bearer wrong"}).status_code == 401
        r = http.post("/v1/search", json={"queries": ["x"]}, headers={"X-API-Key": "wrong"})
        assert r.status_code == 401 and r.json()["error"]["field"] == "authorization"
        assert http.get("/v1/info", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert http.get("/v1/info", headers={"X-API-Key": "s3cret"}).status_code == 200
        with pytest.raises(RemoteError, match="401"):
            m3search.connect(url).info()
        with m3search.connect(url, api_key="s3cret") as client:
            assert len(client) == len(DOCS)


class SlowFirstSearch:
    """The real index, whose first search call holds the search thread for a moment, so that concurrent
    requests queue up behind it; records the queries of each call (one call = one batch)."""

    def __init__(self, index):
        self._index = index
        self.calls: list[int] = []
        self.groups: list[int] = []  # option groups per call

    def search_groups(self, groups, return_exceptions=False):
        self.calls.append(sum(len(q) for q, _ in groups))
        self.groups.append(len(groups))
        if len(self.calls) == 1:
            time.sleep(0.5)
        return self._index.search_groups(groups, return_exceptions=return_exceptions)

    def __getattr__(self, name):
        return getattr(self._index, name)


class OnlySearchMany:
    """An index offering search_many but not search_groups (as a sharded or remote index may)."""

    def __init__(self, index):
        self._index = index
        self.calls: list[int] = []

    def search_many(self, queries, **options):
        self.calls.append(len(queries))
        if len(self.calls) == 1:
            time.sleep(1.0)
        return self._index.search_many(queries, **options)

    def __getattr__(self, name):
        if name == "search_groups":
            raise AttributeError(name)
        return getattr(self._index, name)


def _ask_concurrently(url, bodies, hold_first=0.2):
    """POST each body from its own thread; the first alone, then (while it holds the search thread) the rest."""
    answers: dict[int, httpx.Response] = {}

    def ask(i):
        with httpx.Client(base_url=url, timeout=30) as http:
            answers[i] = http.post("/v1/search", json=bodies[i])

    first = threading.Thread(target=ask, args=(0,))
    first.start()
    time.sleep(hold_first)
    threads = [threading.Thread(target=ask, args=(i,)) for i in range(1, len(bodies))]
    for t in threads:
        t.start()
    for t in [first, *threads]:
        t.join()
    return answers


def test_concurrent_queries_are_micro_batched(index):
    slow = SlowFirstSearch(index)
    queries = [f"{w} column {i}" for i, w in enumerate(["delete", "sort", "navigator", "Spalte"] * 6)]
    with serve(slow) as url:
        answers = _ask_concurrently(url, [{"queries": [q], "k": 3, "mode": "dense"} for q in queries])
        health = httpx.get(url + "/health").json()
    assert len(answers) == len(queries)
    assert slow.calls[0] == 1 and max(slow.calls) > 1 and len(slow.calls) < len(queries)
    assert health["queries"] == len(queries) and health["batches"] == len(slow.calls)
    assert health["largest_batch"] == max(slow.calls)
    for i, q in enumerate(queries):  # batching changes nothing in the answers
        got = [h["docid"] for h in answers[i].json()["results"][0]["hits"]]
        assert got == [h.docid for h in index.search(q, k=3, mode="dense")]


# one batch, every request with its own options; each must get exactly what search_many gives it alone
MIXED = [
    {"queries": ["delete a column"], "k": 3, "mode": "dense"},
    {"queries": ["Spalte löschen", "sort rows"], "k": 5, "mode": "sparse"},
    {"queries": ["Navigator"], "k": 2, "offset": 1, "mode": "dense+sparse"},
    {"queries": ["delete a column"], "k": 4, "filter": {"lang": {"$in": ["de", "fr"]}}, "fields": ["metadata"]},
    {"queries": ["open the navigator"], "k": 3, "weights": {"dense": 1, "sparse": 2}, "fusion": "rrf"},
    {"queries": ["delete a column"], "k": 3, "mode": "dense"},  # same options as the first: same group
    {"queries": ["sort rows"], "k": 3, "filter": {"n": {"$gte": 5}}, "all_scores": True},
]


def _direct(index, body):
    options = {k: v for k, v in body.items() if k != "queries"}
    return index.search_many(body["queries"], **options)


@pytest.mark.parametrize("wrapper, workers, split", [(SlowFirstSearch, 1, False), (OnlySearchMany, 1, False),
                                                     (SlowFirstSearch, 2, False), (SlowFirstSearch, 2, True)])
def test_concurrent_requests_with_different_options_get_their_own_answers(index, wrapper, workers, split):
    slow = wrapper(index)
    bodies = [MIXED[0]] + MIXED * 2
    with serve(slow, ServerSettings(search_workers=workers, split_batches=split)) as url:
        answers = _ask_concurrently(url, bodies)
    if workers == 1:  # the first call holds the only worker: the others queue and share calls
        assert len(slow.calls) < len(bodies)
    if split:  # the first call holds the batch; the rest form one batch, split in two calls side by side
        assert len(slow.calls) < len(bodies) and len(slow.calls) >= 3
    if wrapper is SlowFirstSearch and workers == 1:
        assert max(slow.groups) > 1 and len(slow.calls) < len(bodies)  # one call served several option groups
    for i, body in enumerate(bodies):
        assert answers[i].status_code == 200, answers[i].text
        want = _direct(index, body)
        results = answers[i].json()["results"]
        assert len(results) == len(body["queries"])
        for res, hits in zip(results, want):
            assert [h["docid"] for h in res["hits"]] == [h.docid for h in hits]
            assert [h["score"] for h in res["hits"]] == pytest.approx([h.score for h in hits], rel=1e-6)
            assert [h["rank"] for h in res["hits"]] == list(range(body.get("offset", 0) + 1,
                                                                  body.get("offset", 0) + 1 + len(hits)))
            for h, w in zip(res["hits"], hits):
                assert h["scores"] == pytest.approx(w.scores, rel=1e-6)
                assert h.get("metadata") == w.metadata and h.get("text") == w.text


def test_a_failing_request_in_a_batch_fails_alone(index):
    slow = SlowFirstSearch(index)
    bad = {"queries": ["delete a column"], "k": 3, "filter": {"langx": "de"}}  # unknown field: found by the index
    bodies = [MIXED[0], MIXED[1], bad, MIXED[2], bad, MIXED[3]]
    with serve(slow) as url:
        answers = _ask_concurrently(url, bodies)
    assert max(slow.calls) > 2 and len(slow.calls) < len(bodies)
    assert sum(slow.calls) == sum(len(b["queries"]) for b in bodies)  # the bad ones were batched with the rest
    for i, body in enumerate(bodies):
        if body is bad:
            assert answers[i].status_code == 400
            err = answers[i].json()["error"]
            assert err["field"] == "filter.langx" and "unknown metadata field" in err["message"]
        else:
            assert answers[i].status_code == 200
            want = _direct(index, body)
            got = answers[i].json()["results"]
            assert [[h["docid"] for h in r["hits"]] for r in got] == [[h.docid for h in w] for w in want]


def test_readers_follow_commits_made_elsewhere_while_writes_go_on(index, tmp_path):
    errors = []
    with serve(index) as url, httpx.Client(base_url=url, timeout=30) as http:
        # another process-like writer: a second SearchIndex on the same folder
        with m3search.open_index(tmp_path / "idx") as other:
            other.add([{"id": "elsewhere", "text": "conditional formatting rules"}])
        hit = http.post("/v1/search", json={"queries": ["conditional formatting rules"], "k": 1}).json()
        assert hit["results"][0]["hits"][0]["docid"] == "elsewhere"

        stop = threading.Event()

        def search_loop():
            with httpx.Client(base_url=url, timeout=30) as h:
                while not stop.is_set():
                    r = h.post("/v1/search", json={"queries": ["column"], "k": 5})
                    if r.status_code != 200:
                        errors.append(r.text)

        readers = [threading.Thread(target=search_loop) for _ in range(3)]
        for t in readers:
            t.start()
        for b in range(5):
            r = http.post("/v1/documents", json={"documents": [{"id": f"w{b}-{i}", "text": f"written {b} {i}"}
                                                               for i in range(20)]})
            assert r.status_code == 200, r.text
        stop.set()
        for t in readers:
            t.join()
        assert http.get("/v1/info").json()["n_docs"] == len(DOCS) + 1 + 100
    assert errors == []


@pytest.mark.slow
def test_serve_command_runs_a_server(index, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, M3SEARCH_API_KEY="k1")
    proc = subprocess.Popen([sys.executable, "-m", "m3search", "serve", str(tmp_path / "idx"), "--port", str(port),
                             "--log-level", "warning"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else "timeout"
            time.sleep(0.2)
        with m3search.connect(url, api_key="k1") as client:
            assert client.search("delete an entire column", k=1)[0].docid == "en-3"
            # another process commits to the index: the running server's next search sees it
            extra = tmp_path / "extra.jsonl"
            extra.write_text('{"id": "cross", "text": "freeze panes while scrolling"}\n', encoding="utf-8")
            done = subprocess.run([sys.executable, "-m", "m3search", "index", str(extra), "-o", str(tmp_path / "idx"),
                                   "--quiet"], env=env, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr
            assert client.search("freeze panes while scrolling", k=1)[0].docid == "cross"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
