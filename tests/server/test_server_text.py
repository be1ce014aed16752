"""The text (BM25) signal through the HTTP server: mode and weights in the JSON body, scores.text in hits."""
from __future__ import annotations

import httpx
import pytest

import m3search
from helpers.live_server import serve
from helpers.sample_docs import MODEL, sample_docs


@pytest.mark.slow
def test_search_with_text_over_http(tmp_path):
    docs = sample_docs("id")
    components = {"dense": {}, "sparse": {}, "multivec": {}, "text": {"language": "multilingual"}}
    with m3search.build_index(tmp_path / "idx", docs, model=MODEL, components=components) as index, \
            serve(index) as url, httpx.Client(base_url=url, timeout=30) as http:
        for body in ({"mode": "all+text"}, {"weights": {"dense": 1, "text": 0.05}}, {"mode": "text"}):
            r = http.post("/v1/search", json={"queries": ["delete a column"], "k": 5, "fields": ["scores"], **body})
            assert r.status_code == 200, r.text
            hits = r.json()["results"][0]["hits"]
            want = index.search("delete a column", k=5, mode=body.get("mode"), weights=body.get("weights"))
            assert [h["docid"] for h in hits] == [h.docid for h in want] and hits
            assert [h["scores"]["text"] for h in hits] == pytest.approx([h.scores["text"] for h in want])
    with m3search.build_index(tmp_path / "plain", docs[:5], model=MODEL) as index, serve(index) as url:
        r = httpx.post(url + "/v1/search", json={"queries": ["x"], "mode": "text"}, timeout=30)
        assert r.status_code == 400 and "text component" in r.text
