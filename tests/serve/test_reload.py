"""Hot reload: token-guarded, atomic, refuses broken or incompatible runs while the old one serves."""

from __future__ import annotations

import json
import shutil
import threading

import pytest

from recstack.data.prepare import prepare
from tests.helpers import make_raw
from tests.serve.conftest import make_client
from tests.serve.test_api import error

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def admin(run_dir, monkeypatch):
    monkeypatch.setenv("RECSTACK_ADMIN_TOKEN", TOKEN)
    with make_client(run_dir) as client:
        yield client


def test_admin_disabled_without_a_token(run_dir, monkeypatch):
    monkeypatch.delenv("RECSTACK_ADMIN_TOKEN", raising=False)
    with make_client(run_dir) as client:
        err = error(client.post("/admin/reload", headers=AUTH), 403, "admin_disabled")
        assert "RECSTACK_ADMIN_TOKEN" in err["message"]


def test_admin_refuses_missing_and_wrong_tokens(admin):
    missing = admin.post("/admin/reload")
    error(missing, 401, "missing_token")
    assert missing.headers["www-authenticate"] == "Bearer"
    error(admin.post("/admin/reload", headers={"Authorization": "Bearer nope"}), 403, "wrong_token")
    error(admin.post("/admin/reload", headers={"Authorization": TOKEN}), 403, "wrong_token")
    assert admin.get("/v1/model").json()["version"] == admin.get("/v1/model").json()["version"]


def test_reload_swaps_the_model(admin, run_dir):
    before = admin.get("/v1/model").json()["version"]
    body = admin.post("/admin/reload", headers=AUTH, json={"run_dir": str(run_dir)}).json()
    assert body["status"] == "reloaded" and body["previous_version"] == before
    assert body["model"]["version"] > before == body["previous_version"]
    assert admin.get("/v1/model").json()["version"] == body["model"]["version"]
    assert 'recstack_serve_reloads_total{outcome="ok"} 1.0' in admin.get("/metrics").text


def corrupt_copy(run_dir, tmp_path):
    broken = tmp_path / "broken-run"
    shutil.copytree(run_dir, broken)
    (broken / "ranker" / "model.safetensors").write_bytes(b"this is not a safetensors file")
    return broken


def incompatible_copy(run_dir, tmp_path):
    """The same run pointed at a dataset with another (smaller) catalogue."""
    other = prepare(make_raw(num_items=40), name="other-catalogue").save(tmp_path / "other-catalogue")
    run = tmp_path / "incompatible-run"
    shutil.copytree(run_dir, run)
    config = json.loads((run / "config.json").read_text())
    config["dataset"]["name"] = str(other)
    (run / "config.json").write_text(json.dumps(config))
    return run


@pytest.mark.parametrize("make_bad", [corrupt_copy, incompatible_copy, lambda run, tmp: tmp / "missing"])
def test_broken_run_is_refused_and_the_old_one_keeps_serving(admin, run_dir, tmp_path, make_bad, served_dataset):
    bad = make_bad(run_dir, tmp_path)
    user = served_dataset.users["raw_id"][0]
    before = admin.post("/v1/recommend", json={"user_id": user}).json()
    err = error(admin.post("/admin/reload", headers=AUTH, json={"run_dir": str(bad)}), 422, "reload_refused")
    assert str(bad) in err["message"] and "still serving" in err["message"] and err["field"] == "run_dir"
    after = admin.post("/v1/recommend", json={"user_id": user}).json()
    assert after["model_version"] == before["model_version"] and after["items"] == before["items"]
    assert admin.get("/v1/model").json()["last_reload"]["ok"] is False
    assert 'recstack_serve_reloads_total{outcome="refused"} 1.0' in admin.get("/metrics").text


def test_reload_during_concurrent_requests_loses_none(admin, run_dir, served_dataset):
    users = served_dataset.users["raw_id"].to_list()[:30]
    stop, statuses, versions = threading.Event(), [], set()

    def hammer(offset: int) -> None:
        n = offset
        while not stop.is_set():
            response = admin.post("/v1/recommend", json={"user_id": users[n % len(users)], "k": 5})
            statuses.append(response.status_code)
            if response.status_code == 200:
                versions.add(response.json()["model_version"])
            n += 1

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        for _ in range(3):
            assert admin.post("/admin/reload", headers=AUTH).status_code == 200
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert len(statuses) >= 12 and set(statuses) == {200}, f"{len(statuses)} requests, statuses {set(statuses)}"
    assert len(versions) >= 2  # requests were answered by more than one model generation
