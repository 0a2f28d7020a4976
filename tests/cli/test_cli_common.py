import io

from rich.console import Console

from recstack.cli.common import print_metrics

RANKER = {
    "ranker": {
        "like/auc": 0.7371106,
        "like/gauc": 0.7191358,
        "like/logloss": 0.3103674,
        "view/auc": 0.7197567,
        "view/gauc": 0.7081124,
        "view/logloss": 0.4775396,
        "samples": 4715.0,
    }
}
PAGE = {
    "page (ranked)": {"recall@5": 0.1145281, "ndcg@5": 0.0706151, "recall@10": 0.1749734, "ndcg@10": 0.0901412},
    "popularity baseline": {"recall@5": 0.0583244, "ndcg@5": 0.0360379, "recall@10": 0.0837752, "ndcg@10": 0.0440},
}
FULL = ["like/auc", "like/gauc", "like/logloss", "view/auc", "view/gauc", "view/logloss", "samples", "0.7371"]
FULL += ["0.7191", "0.3104", "0.7198", "0.7081", "0.4775", "4715.0000", "page (ranked)", "popularity baseline"]
FULL += ["recall@5", "ndcg@5", "recall@10", "ndcg@10", "0.1145", "0.0706", "0.1750", "0.0901", "0.0838", "0.0440"]


def printed(console: Console) -> str:
    print_metrics("ranker (test)", RANKER, out=console)
    print_metrics("ml-100k-cascade: test", PAGE, out=console)
    assert isinstance(console.file, io.StringIO)
    return console.file.getvalue()


def test_off_a_terminal_every_name_and_value_is_printed_in_full():
    # a log file or a pipe: not a terminal, and only 40 columns by rich's reckoning
    text = printed(Console(file=io.StringIO(), width=40))
    assert "…" not in text
    for word in FULL:
        assert word in text, word
    header = next(line for line in text.splitlines() if "like/auc" in line)
    assert "view/logloss" in header  # one table row per line, however wide


def test_a_narrow_terminal_gets_the_table_transposed():
    console = Console(file=io.StringIO(), width=48, force_terminal=True, color_system=None)
    text = printed(console)
    assert "…" not in text
    for word in " ".join(FULL).split():  # a header may wrap at a space ("popularity / baseline")
        assert word in text, word
    assert max(len(line) for line in text.splitlines()) <= 48
    rows = [line for line in text.splitlines() if "like/logloss" in line or "recall@10" in line]
    assert any("0.3104" in row for row in rows) and any("0.1750" in row and "0.0838" in row for row in rows)


def test_a_wide_enough_console_prints_the_table_as_is():
    text = printed(Console(file=io.StringIO(), width=200))
    header = next(line for line in text.splitlines() if "like/auc" in line)
    assert header.index("like/auc") < header.index("view/auc")
