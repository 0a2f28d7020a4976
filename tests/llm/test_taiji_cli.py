"""`recstack llm reason | filter | sft | popo | features | intent` on the tiny dataset with the tiny Llama."""

import json

import polars as pl
import yaml
from typer.testing import CliRunner

from recstack.cli.main import app
from recstack.config import to_dict
from recstack.llm.taiji import pipeline as pipeline_module
from recstack.llm.taiji.embedding import TextEmbedder
from tests.llm.taiji_data import BagOfWordsModel, categorised_dataset, tiny_config

runner = CliRunner()


def test_cli_runs_every_stage_and_resumes(tmp_path, monkeypatch):
    dataset = categorised_dataset()
    dataset.save()
    monkeypatch.setattr(pipeline_module, "TextEmbedder", lambda config=None: TextEmbedder(model=BagOfWordsModel()))
    config = tmp_path / "taiji.yaml"
    config.write_text(yaml.safe_dump(to_dict(tiny_config())))
    work = str(tmp_path / "work")
    first = runner.invoke(app, ["llm", "reason", "--work", work, "--config", str(config)])
    assert first.exit_code == 0, first.output
    assert '"samples"' in first.output
    # later commands read the work folder's config.json
    for args in (
        ["filter"],
        ["sft"],
        ["popo", "--weighting", "fixed", "--weights", "1,0", "--steps", "1"],
        ["features", "--stage", "popo-fixed-1-0"],
        ["intent", "--stage", "sft"],
    ):
        result = runner.invoke(app, ["llm", *args, "--work", work])
        assert result.exit_code == 0, (args, result.output)
    assert json.loads((tmp_path / "work" / "popo-fixed-1-0" / "base.json").read_text())["weighting"] == {
        "name": "fixed",
        "weights": [1.0, 0.0],
    }
    frame = pl.read_parquet(tmp_path / "work" / "features" / "popo-fixed-1-0.parquet")
    assert frame.height == dataset.num_users
    again = runner.invoke(app, ["llm", "reason", "--work", work])
    assert again.exit_code == 0 and json.loads(again.output.split("reason ", 1)[1])["users"] == 6
    bad = runner.invoke(app, ["llm", "popo", "--work", work, "--weights", "1,0", "--weighting", "mgda"])
    assert bad.exit_code == 2 and "--weights goes with --weighting fixed" in bad.output
    missing = runner.invoke(app, ["llm", "reason", "--work", str(tmp_path / "w2"), "--dataset", "nowhere"])
    assert missing.exit_code == 2 and "recstack data prepare" in missing.output
