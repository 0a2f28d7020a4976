"""Served pages are the cascade's pages: the same items and scores as `Cascade.recommend`, whether a
request is served alone, in a batch, or in a micro-batch with others; cold start and dropped history
items are flagged."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from recstack.cascade import Cascade, history_features
from tests.serve.conftest import make_client


@pytest.fixture(scope="module")
def reference(run_dir, served_dataset):
    """The pages `Cascade.recommend` gives the first 24 users (raw ids -> [(raw item, score)])."""
    cascade = Cascade.load(run_dir)
    view = cascade.retrieval_view(served_dataset)
    users = torch.arange(1, 25)
    page = cascade.recommend(view.user_batch(users, features=history_features(view)), 10)
    raw_users, raw_items = served_dataset.users["raw_id"].to_list(), served_dataset.items["raw_id"].to_list()
    return {
        raw_users[u - 1]: [
            (raw_items[i - 1], s) for i, s in zip(page.items[b].tolist(), page.scores[b].tolist()) if i > 0
        ]
        for b, u in enumerate(users.tolist())
    }


def check_same(body: dict, expected: list[tuple[str, float]]) -> None:
    assert [i["item_id"] for i in body["items"]] == [i for i, _ in expected]
    assert [i["score"] for i in body["items"]] == pytest.approx([s for _, s in expected], rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("batching", [True, False])
def test_single_requests_equal_cascade_recommend(run_dir, reference, batching):
    with make_client(run_dir, micro_batching=batching) as client:
        for user, expected in list(reference.items())[:12]:
            check_same(client.post("/v1/recommend", json={"user_id": user, "k": 10}).json(), expected)


def test_batch_endpoint_serves_one_micro_batch_with_the_same_pages(client, reference):
    users = list(reference)[:8]
    results = client.post("/v1/recommend/batch", json={"requests": [{"user_id": u, "k": 10} for u in users]}).json()
    assert [r["user_id"] for r in results["results"]] == users
    assert {r["batch_size"] for r in results["results"]} == {8}  # queued together, served as one UserBatch
    for user, body in zip(users, results["results"]):
        check_same(body, reference[user])


def test_concurrent_requests_are_micro_batched_and_unchanged(run_dir, reference):
    with make_client(run_dir, max_wait_ms=200.0) as client:  # wide: batching must not hinge on timing
        users = list(reference)

        def ask(user):
            return user, client.post("/v1/recommend", json={"user_id": user, "k": 10}).json()

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(ask, users))
    for user, body in answers:
        check_same(body, reference[user])
    assert max(body["batch_size"] for _, body in answers) > 1


def test_mixed_page_sizes_in_one_batch(client, reference):
    users = list(reference)[:3]
    requests = [{"user_id": users[0], "k": 3}, {"user_id": users[1], "k": 10}, {"user_id": users[2], "k": 1}]
    results = client.post("/v1/recommend/batch", json={"requests": requests}).json()["results"]
    for request, body in zip(requests, results):
        check_same(body, reference[request["user_id"]][: request["k"]])


def test_unknown_user_gets_the_flagged_cold_start_page(client, served_dataset):
    body = client.post("/v1/recommend", json={"user_id": "no-such-user", "k": 5}).json()
    assert body["cold_start"] and not body["user_known"] and body["user_id"] == "no-such-user"
    counts = (
        served_dataset.split_frame("train")["item"].value_counts().sort(["count", "item"], descending=[True, False])
    )
    top = counts["count"].to_list()[:5]
    assert [i["score"] for i in body["items"]] == top
    assert all(i["channels"] == ["popular"] for i in body["items"])


def test_unknown_history_items_are_dropped_and_reported(client, served_dataset):
    raw = served_dataset.items["raw_id"].to_list()
    known = [raw[3], raw[10], raw[20]]
    mixed = client.post("/v1/recommend", json={"history": [known[0], "ghost-1", *known[1:], "ghost-2"], "k": 6}).json()
    clean = client.post("/v1/recommend", json={"history": known, "k": 6}).json()
    assert mixed["dropped_history_items"] == ["ghost-1", "ghost-2"] and clean["dropped_history_items"] == []
    assert not mixed["cold_start"] and not mixed["user_known"]
    assert [i["item_id"] for i in mixed["items"]] == [i["item_id"] for i in clean["items"]]
    assert not set(known) & {i["item_id"] for i in mixed["items"]}  # history items are not shown again
    only_unknown = client.post("/v1/recommend", json={"history": ["ghost"], "k": 4}).json()
    assert only_unknown["cold_start"] and only_unknown["dropped_history_items"] == ["ghost"]


def test_exclude_removes_items_and_keeps_the_page_full(client, reference):
    user, expected = next(iter(reference.items()))
    banned = [i for i, _ in expected[:3]]
    body = client.post("/v1/recommend", json={"user_id": user, "k": 10, "exclude": [*banned, "ghost"]}).json()
    shown = [i["item_id"] for i in body["items"]]
    assert len(shown) == 10 and not set(banned) & set(shown)
    assert body["unknown_exclude_items"] == ["ghost"]
    cold = client.post("/v1/recommend", json={"user_id": "nobody", "k": 3}).json()
    again = client.post(
        "/v1/recommend", json={"user_id": "nobody", "k": 3, "exclude": [cold["items"][0]["item_id"]]}
    ).json()
    assert [i["item_id"] for i in again["items"]][:2] == [i["item_id"] for i in cold["items"]][1:]
