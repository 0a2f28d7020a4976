"""The demo page at `/`: server-rendered HTML, one GET form, no JavaScript and no build step.

Pick a user (or type a raw id): the page shows their recent history with titles, the page the cascade
serves them with channel tags and scores, and the per-stage latency of that very request. Every value
from the data is HTML-escaped.
"""

from __future__ import annotations

from html import escape

from recstack.serve.model import ServingModel
from recstack.serve.schemas import RecommendResponse

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;max-width:70rem;color:#222}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}td,th{border-bottom:1px solid #ddd;padding:.25rem .6rem;text-align:left}
th{background:#f4f4f4}.num{text-align:right;font-variant-numeric:tabular-nums}.tag{background:#e8eefc;border-radius:.3rem;
padding:0 .35rem;margin-right:.2rem;font-size:.85em}.note{color:#a15c00}.err{color:#b00020}.cols{display:flex;gap:3rem;flex-wrap:wrap}
"""


def _table(headers: list[str], rows: list[list[str]], numeric: set[int] | None = None) -> str:
    numeric = numeric or set()
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(f'<td class="num">{c}</td>' if j in numeric else f"<td>{c}</td>" for j, c in enumerate(r))
        + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _history(model: ServingModel, user_id: str, limit: int = 15) -> str:
    user = model.user_index.get(user_id)
    if user is None:
        return ""
    items = model.histories.history.row(user - 1).tolist()[::-1][:limit]
    rows = [[str(n), escape(model.raw_items[i - 1]), escape(model.titles[i])] for n, i in enumerate(items, 1)]
    total = int(model.histories.history.lengths()[user - 1])
    return f"<div><h2>History (newest first, {len(items)} of {total})</h2>{_table(['#', 'item', 'title'], rows, {0})}</div>"


def render_demo(
    model: ServingModel,
    users: list[str],
    user_id: str | None,
    k: int,
    page: RecommendResponse | None,
    error: str | None,
) -> str:
    info = model.describe()
    if user_id is not None and user_id not in users:  # a typed-in id shows as the selected one
        users = [user_id, *users]
    options = "".join(
        f'<option value="{escape(u)}"{" selected" if u == user_id else ""}>{escape(u)}</option>' for u in users
    )
    form = (
        '<form method="get" action="/">'
        f'<label>user <select name="user_id">{options}</select></label> '
        f'<label>or raw id <input name="other" size="8" value=""></label> '
        f'<label>k <input name="k" type="number" min="1" value="{k}" size="3"></label> '
        "<button>show page</button></form>"
    )
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>recstack serve: {escape(str(info['run']))}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>recstack serve</h1><p>run <b>{escape(str(info['run']))}</b> on {escape(str(info['dataset']))} "
        f"(version {info['version']}; channels {escape(', '.join(model.channel_names))}; "
        f"ranker {escape(str(info['ranker']))}; page {escape(str(info['page']))}) &middot; "
        '<a href="/docs">API docs</a> &middot; <a href="/metrics">metrics</a></p>',
        form,
    ]
    if error:
        parts.append(f'<p class="err">{escape(error)}</p>')
    if page is not None and user_id is not None:
        if page.cold_start:
            parts.append(f'<p class="note">user {escape(user_id)} is unknown: cold-start page (most popular items)</p>')
        rows = [
            [
                str(n),
                escape(p.item_id),
                escape(p.title),
                f"{p.score:.4f}",
                "".join(f'<span class="tag">{escape(c)}</span>' for c in p.channels),
            ]
            for n, p in enumerate(page.items, 1)
        ]
        page_html = f"<div><h2>Page for user {escape(user_id)}</h2>{_table(['rank', 'item', 'title', 'score', 'channels'], rows, {0, 3})}</div>"
        parts.append(f'<div class="cols">{page_html}{_history(model, user_id)}</div>')
        stages = [[escape(s), f"{ms:.2f}"] for s, ms in page.timings_ms.items()]
        parts.append(f"<h2>Latency of this request (ms)</h2>{_table(['stage', 'ms'], stages, {1})}")
        parts.append(f"<p>served in a micro-batch of {page.batch_size} request(s)</p>")
    parts.append("</body></html>")
    return "".join(parts)
