"""The `recstack` command: data, run, bench, eval, recommend, simulate, posttrain."""

from __future__ import annotations

import typer

from recstack.cli import data as data_cli
from recstack.cli import llm as llm_cli
from recstack.cli import sid as sid_cli
from recstack.cli.common import friendly_errors
from recstack.cli.eval import eval_command
from recstack.cli.posttrain import posttrain_command
from recstack.cli.recommend import recommend_command
from recstack.cli.run import bench_command, run_command
from recstack.cli.serve import serve_command
from recstack.cli.simulate import simulate_command

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="recstack: the modern industrial recommendation stack, from data to page.",
)
app.add_typer(data_cli.app, name="data", help="List, fetch, prepare and describe datasets.")
app.add_typer(sid_cli.app, name="sid", help="Semantic IDs: encode items, quantize, inspect codes.")
app.add_typer(
    llm_cli.llm_app, name="llm", help="Language models: serve, and Taiji's reason / filter / sft / popo / features."
)
app.command("run")(friendly_errors(run_command))
app.command("bench")(friendly_errors(bench_command))
app.command("eval")(friendly_errors(eval_command))
app.command("recommend")(friendly_errors(recommend_command))
app.command("simulate")(friendly_errors(simulate_command))
app.command("posttrain")(friendly_errors(posttrain_command))
app.command("serve")(friendly_errors(serve_command))


if __name__ == "__main__":
    app()
