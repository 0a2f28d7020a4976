"""The `recstack` command: data, run, bench, eval, recommend."""

from __future__ import annotations

import typer

from recstack.cli import data as data_cli
from recstack.cli import sid as sid_cli
from recstack.cli.common import friendly_errors
from recstack.cli.eval import eval_command
from recstack.cli.recommend import recommend_command
from recstack.cli.run import bench_command, run_command

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="recstack: the modern industrial recommendation stack, from data to page.",
)
app.add_typer(data_cli.app, name="data", help="List, fetch, prepare and describe datasets.")
app.add_typer(sid_cli.app, name="sid", help="Semantic IDs: encode items, quantize, inspect codes.")
app.command("run")(friendly_errors(run_command))
app.command("bench")(friendly_errors(bench_command))
app.command("eval")(friendly_errors(eval_command))
app.command("recommend")(friendly_errors(recommend_command))


if __name__ == "__main__":
    app()
