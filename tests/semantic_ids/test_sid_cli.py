"""`recstack sid fit | show` on a tiny prepared dataset, with a fake text model (no real model needed)."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from typer.testing import CliRunner

from recstack.cli.main import app
from recstack.cli.sid import quantizer_spec
from recstack.errors import ConfigError
from recstack.semantic_ids import SemanticIds
from recstack.semantic_ids.encoders import text as text_module

runner = CliRunner()


class HashingModel:
    """Fake sentence model: a fixed random vector per text; item "item 1" and "item 10" share a word prefix."""

    loads = 0

    def encode(self, sentences, normalize_embeddings=False, **_):
        rows = [
            torch.randn(
                12, generator=torch.Generator().manual_seed(int(hashlib.sha256(s.encode()).hexdigest()[:8], 16))
            )
            for s in sentences
        ]
        out = torch.stack(rows)
        return torch.nn.functional.normalize(out, dim=1) if normalize_embeddings else out


@pytest.fixture(autouse=True)
def fake_text_model(monkeypatch):
    def load(path, device="cpu"):
        HashingModel.loads += 1
        return HashingModel()

    HashingModel.loads = 0
    monkeypatch.setattr(text_module, "load_sentence_model", load)
    monkeypatch.setattr(text_module, "resolve_model_path", lambda model: model)
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny work on a shared machine: no OpenMP spin-waits
    yield
    torch.set_num_threads(before)


@pytest.fixture
def saved_dataset(tiny_dataset):
    tiny_dataset.save()  # under the test's own RECSTACK_HOME
    return tiny_dataset


def fit(out, *extra):
    return runner.invoke(
        app,
        [
            "sid",
            "fit",
            "--dataset",
            "tiny",
            "--encoder",
            "text",
            "--quantizer",
            "rq_kmeans",
            "--levels",
            "2",
            "--codebook",
            "4",
            "--out",
            str(out),
            *extra,
        ],
    )


def test_sid_fit_writes_codes_and_diagnostics(saved_dataset, tmp_path):
    out = tmp_path / "run"
    result = fit(out)
    assert result.exit_code == 0, result.output
    assert "collision_rate" in result.output and "utilisation" in result.output
    assert {p.name for p in out.iterdir()} >= {"sid", "run.json", "diagnostics.md", "embeddings.safetensors"}
    sids = SemanticIds.load(out / "sid")
    assert sids.codes.shape == (saved_dataset.num_items + 1, 3) and torch.all(sids.codes[0] == 0)
    assert int(sids.codes[1:, :2].max()) < 4
    run = json.loads((out / "run.json").read_text())
    assert run["quantizer"]["levels"] == 2 and run["quantizer"]["codebook_size"] == 4
    assert run["encoder_stats"]["cache"] == "miss" and run["diagnostics"]["items"] == saved_dataset.num_items
    assert "| level | codebook |" in (out / "diagnostics.md").read_text()
    again = fit(tmp_path / "run2")  # second fit: embeddings come from the cache, the model is not loaded
    assert again.exit_code == 0, again.output
    assert HashingModel.loads == 1
    assert json.loads((tmp_path / "run2" / "run.json").read_text())["encoder_stats"]["cache"] == "hit"


def test_sid_show_prints_codes_and_prefix_neighbours(saved_dataset, tmp_path):
    out = tmp_path / "run"
    assert fit(out).exit_code == 0
    raw = saved_dataset.raw_item_ids()[4]
    result = runner.invoke(app, ["sid", "show", "--run", str(out), "--item", raw, "--top", "5"])
    assert result.exit_code == 0, result.output
    codes = SemanticIds.load(out / "sid").codes[5].tolist()
    assert f"codes {codes[:-1]}" in result.output
    assert "title: " + saved_dataset.items["title"][4] in result.output
    assert "nearest items by shared prefix" in result.output and "depth 1:" in result.output
    by_id = runner.invoke(app, ["sid", "show", "--run", str(out), "--item", "5", "--by", "id"])
    assert by_id.exit_code == 0 and f"codes {codes[:-1]}" in by_id.output
    missing = runner.invoke(app, ["sid", "show", "--run", str(out), "--item", "no-such-item"])
    assert missing.exit_code == 2 and "no item with raw id 'no-such-item'" in missing.output
    not_a_run = runner.invoke(app, ["sid", "show", "--run", str(tmp_path), "--item", raw])
    assert not_a_run.exit_code == 2 and "missing run.json" in not_a_run.output


def test_sid_fit_rejects_unknown_names_and_leaves_no_folder(saved_dataset, tmp_path):
    out = tmp_path / "run"
    bad_encoder = runner.invoke(app, ["sid", "fit", "--dataset", "tiny", "--encoder", "nope", "--out", str(out)])
    assert bad_encoder.exit_code == 2 and "unknown item_encoder 'nope'" in bad_encoder.output
    assert "text" in bad_encoder.output  # the message lists the known encoders
    bad_quantizer = runner.invoke(app, ["sid", "fit", "--dataset", "tiny", "--quantizer", "nope", "--out", str(out)])
    assert bad_quantizer.exit_code == 2 and "unknown quantizer 'nope'" in bad_quantizer.output
    no_data = runner.invoke(app, ["sid", "fit", "--dataset", "absent", "--out", str(out)])
    assert no_data.exit_code == 2 and "no prepared dataset" in no_data.output
    too_big = fit(out, "--codebook", "1000")
    assert too_big.exit_code == 2 and "codebook" in too_big.output
    assert not out.exists()


def test_sid_fit_reads_options_from_yaml(saved_dataset, tmp_path):
    config = tmp_path / "sid.yaml"
    config.write_text("encoder: {format: values}\nquantizer: {kmeans: {niter: 5}}\n")
    result = fit(tmp_path / "run", "--config", str(config))
    assert result.exit_code == 0, result.output
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["encoder"]["format"] == "values" and run["quantizer"]["kmeans"] == {"niter": 5}
    config.write_text("encoder: {name: collab}\n")
    clash = fit(tmp_path / "run3", "--config", str(config))
    assert clash.exit_code == 2 and "encoder.name" in clash.output


def test_levels_map_onto_each_quantizer_config():
    assert quantizer_spec("rq_kmeans", {}, 3, 64)["levels"] == 3
    fsq = quantizer_spec("res_kmeans_fsq", {}, 3, 64)
    assert fsq["kmeans_levels"] == 2 and fsq["codebook_size"] == 64  # the FSQ level is the third
    assert "levels" not in quantizer_spec("rq_kmeans", {"seed": 1}, None, None)
    with pytest.raises(ConfigError, match="unknown quantizer"):
        quantizer_spec("nope", {}, None, None)
