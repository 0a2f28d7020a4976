"""/metrics exposes per-stage histograms; `recstack serve` runs under uvicorn and reloads on SIGHUP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx

from tests.serve.conftest import make_client


def test_metrics_expose_stage_histograms_and_request_counts(client, served_dataset):
    user = served_dataset.users["raw_id"][0]
    client.post("/v1/recommend", json={"user_id": user})
    client.post("/v1/recommend", json={"user_id": "nobody"})
    client.post("/v1/recommend", json={"user_id": user, "k": 0})
    text = client.get("/metrics").text
    for stage in (
        "channel:popular",
        "channel:itemcf",
        "channel:swing",
        "channel:sasrec",
        "merge",
        "rank",
        "page",
        "popular",
    ):
        assert f'recstack_serve_stage_seconds_bucket{{le="0.001",stage="{stage}"}}' in text, stage
    assert 'recstack_serve_requests_total{endpoint="/v1/recommend",status="200"} 2.0' in text
    assert 'recstack_serve_requests_total{endpoint="/v1/recommend",status="422"} 1.0' in text
    assert 'recstack_serve_errors_total{code="k_out_of_range",endpoint="/v1/recommend"} 1.0' in text
    assert "recstack_serve_request_seconds_bucket" in text and "recstack_serve_queue_seconds_count" in text
    assert "recstack_serve_batch_size_count" in text and "recstack_serve_model_version" in text


def test_two_apps_keep_separate_metrics(run_dir):
    with make_client(run_dir) as one, make_client(run_dir) as two:
        one.get("/healthz")
        assert 'endpoint="/healthz"' in one.get("/metrics").text
        assert 'endpoint="/healthz"' not in two.get("/metrics").text


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_serves_and_reloads_on_sighup(run_dir, served_dataset):
    port = free_port()
    env = {**os.environ, "RECSTACK_ADMIN_TOKEN": "", "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "recstack.cli.main",
        "serve",
        str(run_dir),
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.stdout.read() if server.stdout else ""
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server not ready within 60 s"
            time.sleep(0.2)
        user = served_dataset.users["raw_id"][0]
        page = httpx.post(f"{base}/v1/recommend", json={"user_id": user, "k": 4}).json()
        assert len(page["items"]) == 4 and page["model_version"] == 1
        server.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while httpx.get(f"{base}/v1/model").json()["version"] == 1:
            assert time.monotonic() < deadline, "no reload within 30 s of SIGHUP"
            time.sleep(0.1)
        assert httpx.post(f"{base}/v1/recommend", json={"user_id": user, "k": 4}).json()["items"] == page["items"]
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_cli_refuses_a_folder_that_is_not_a_run(tmp_path):
    from typer.testing import CliRunner

    from recstack.cli.main import app

    result = CliRunner().invoke(app, ["serve", str(tmp_path)])
    assert result.exit_code == 2 and "not a recstack run folder" in result.output
