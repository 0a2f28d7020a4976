"""Request -> Row: check limits and map raw ids to internal ids, before anything reaches the model.

What is refused (422, naming the field): neither or both of user_id and history, k outside 1..max_k,
a history or exclude list over its limit, a scenario the dataset does not have. What is tolerated and
reported, never silently: unknown history items (dropped, listed in `dropped_history_items`), unknown
exclude items (listed in `unknown_exclude_items`), an unknown user or a history with no known item
(the cold-start page, flagged `cold_start`).
"""

from __future__ import annotations

from dataclasses import dataclass

from recstack.serve.config import ServeConfig
from recstack.serve.model import ServingModel
from recstack.serve.pipeline import Row
from recstack.serve.schemas import RecommendRequest, RequestError


@dataclass
class Resolved:
    row: Row
    user_id: str | None
    user_known: bool
    dropped_history: list[str]
    unknown_exclude: list[str]


def _field(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def resolve(model: ServingModel, config: ServeConfig, request: RecommendRequest, where: str = "") -> Resolved:
    """The Row for one request, or RequestError (422) naming the offending field under `where`."""
    if (request.user_id is None) == (request.history is None):
        raise RequestError(
            422,
            "user_or_history",
            "give exactly one of user_id (a known user) or history (raw item ids)",
            where or None,
        )
    k = request.k if request.k is not None else min(model.cascade.page.config.k, config.max_k)
    if not 1 <= k <= config.max_k:
        raise RequestError(
            422, "k_out_of_range", f"k must be between 1 and {config.max_k}, got {k}", _field(where, "k")
        )
    if request.history is not None and len(request.history) > config.max_history:
        raise RequestError(
            422,
            "history_too_long",
            f"history has {len(request.history)} items; at most {config.max_history} are accepted",
            _field(where, "history"),
        )
    if len(request.exclude) > config.max_exclude:
        raise RequestError(
            422,
            "exclude_too_long",
            f"exclude has {len(request.exclude)} items; at most {config.max_exclude} are accepted",
            _field(where, "exclude"),
        )
    scenario = None
    if request.scenario is not None:
        if request.scenario not in model.scenario_names:
            known = ", ".join(model.scenario_names) or "none (this dataset has no scenarios)"
            raise RequestError(
                422,
                "unknown_scenario",
                f"scenario {request.scenario!r} is not in {model.dataset.name}; scenarios: {known}",
                _field(where, "scenario"),
            )
        scenario = model.scenario_names.index(request.scenario)

    exclude, unknown_exclude = _lookup(model.item_index, request.exclude)
    if request.user_id is not None:
        user_id = str(request.user_id)
        user = model.user_index.get(user_id, 0)
        row = Row(user=user, history=None, k=k, exclude=exclude, scenario=scenario, cold=user == 0)
        return Resolved(row, user_id, user > 0, [], unknown_exclude)
    history, dropped = _lookup(model.item_index, request.history or [])
    row = Row(user=0, history=history, k=k, exclude=exclude, scenario=scenario, cold=not history)
    return Resolved(row, None, False, dropped, unknown_exclude)


def _lookup(index: dict[str, int], raw: list[str | int]) -> tuple[list[int], list[str]]:
    """(internal ids of the known raw ids, in order; the unknown raw ids as text)."""
    known, unknown = [], []
    for value in raw:
        item = index.get(str(value))
        if item is None:
            unknown.append(str(value))
        else:
            known.append(item)
    return known, unknown
