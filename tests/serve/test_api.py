"""The HTTP contract: status codes, response schemas and the one error body every refusal uses."""

from __future__ import annotations

import json

import pytest

from tests.serve.conftest import make_client


def error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "field"}
    assert body["error"]["code"] == code
    return body["error"]


def test_health_ready_model_and_openapi(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    model = client.get("/v1/model").json()
    assert model["run"] == "serve-test" and model["channels"] == ["popular", "itemcf", "swing", "sasrec"]
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/v1/recommend", "/v1/recommend/batch", "/v1/items/{item_id}", "/admin/reload", "/metrics"):
        assert path in paths


def test_recommend_known_user_schema(client, served_dataset):
    user = served_dataset.users["raw_id"][0]
    body = client.post("/v1/recommend", json={"user_id": user, "k": 7}).json()
    assert body["user_id"] == user and body["user_known"] and not body["cold_start"]
    assert len(body["items"]) == 7
    raw_items = set(served_dataset.items["raw_id"].to_list())
    for item in body["items"]:
        assert set(item) == {"item_id", "score", "channels", "title"}
        assert item["item_id"] in raw_items and item["title"]
        assert item["channels"] and set(item["channels"]) <= {"popular", "itemcf", "swing", "sasrec"}
    stages = {"queue", "channel:popular", "channel:itemcf", "channel:swing", "channel:sasrec", "merge", "rank", "page"}
    assert stages | {"total"} == set(body["timings_ms"])
    assert all(v >= 0 for v in body["timings_ms"].values())
    assert body["batch_size"] >= 1 and body["model_version"] >= 1
    assert body["dropped_history_items"] == [] and body["unknown_exclude_items"] == []


def test_default_k_is_the_runs_page_size(client, served_dataset):
    body = client.post("/v1/recommend", json={"user_id": served_dataset.users["raw_id"][3]}).json()
    assert len(body["items"]) == 10


@pytest.mark.parametrize("k", [0, -1, 21])
def test_k_out_of_bounds_is_422(client, served_dataset, k):
    err = error(
        client.post("/v1/recommend", json={"user_id": served_dataset.users["raw_id"][0], "k": k}), 422, "k_out_of_range"
    )
    assert err["message"] == f"k must be between 1 and 20, got {k}" and err["field"] == "k"


def test_user_or_history_exactly_one(client, served_dataset):
    error(client.post("/v1/recommend", json={"k": 3}), 422, "user_or_history")
    both = {"user_id": served_dataset.users["raw_id"][0], "history": ["1"], "k": 3}
    assert "exactly one" in error(client.post("/v1/recommend", json=both), 422, "user_or_history")["message"]


def test_unknown_key_and_bad_type_name_the_field(client):
    err = error(client.post("/v1/recommend", json={"user_id": "1", "kk": 3}), 422, "invalid_request")
    assert err["field"] == "kk" and "Extra inputs" in err["message"]
    err = error(client.post("/v1/recommend", json={"user_id": "1", "k": "many"}), 422, "invalid_request")
    assert err["field"] == "k"
    error(
        client.post("/v1/recommend", content=b"{not json", headers={"content-type": "application/json"}),
        422,
        "invalid_request",
    )


def test_payload_limits(client, served_dataset):
    items = served_dataset.items["raw_id"].to_list()
    err = error(client.post("/v1/recommend", json={"history": items[:51]}), 422, "history_too_long")
    assert "at most 50" in err["message"] and err["field"] == "history"
    user = served_dataset.users["raw_id"][0]
    error(client.post("/v1/recommend", json={"user_id": user, "exclude": items[:21]}), 422, "exclude_too_long")
    err = error(client.post("/v1/recommend/batch", json={"requests": [{"user_id": user}] * 9}), 422, "batch_too_large")
    assert err["field"] == "requests" and "at most 8" in err["message"]
    bad = {"requests": [{"user_id": user}, {"user_id": user, "k": 99}]}
    assert error(client.post("/v1/recommend/batch", json=bad), 422, "k_out_of_range")["field"] == "requests[1].k"


def test_body_size_limit_is_413(run_dir):
    with make_client(run_dir, max_body_bytes=200) as client:
        body = json.dumps({"history": [str(i) for i in range(100)]})
        err = error(
            client.post("/v1/recommend", content=body, headers={"content-type": "application/json"}),
            413,
            "payload_too_large",
        )
        assert "at most 200" in err["message"]


def test_unknown_scenario_lists_the_valid_ones(client, served_dataset):
    user = served_dataset.users["raw_id"][0]
    err = error(client.post("/v1/recommend", json={"user_id": user, "scenario": "feed"}), 422, "unknown_scenario")
    assert "has no scenarios" in err["message"]


def test_items_endpoint(client, served_dataset):
    raw = served_dataset.items["raw_id"][4]
    body = client.get(f"/v1/items/{raw}").json()
    assert body["item_id"] == raw and body["title"] == served_dataset.items["title"][4]
    assert body["train_interactions"] >= 0
    error(client.get("/v1/items/no-such-item"), 404, "unknown_item")
    error(client.get("/no/such/path"), 404, "http_error")


def test_demo_page_shows_history_page_and_latency(client, served_dataset):
    user = served_dataset.users["raw_id"][2]
    html = client.get("/", params={"user_id": user, "k": 5}).text
    assert f"Page for user {user}" in html and "History (newest first" in html
    assert "channel:sasrec" in html and "merge" in html and 'class="tag"' in html
    assert client.get("/", params={"other": "nobody"}).text.count("cold-start page") == 1
    assert "k must be between" in client.get("/", params={"user_id": user, "k": 500}).text
