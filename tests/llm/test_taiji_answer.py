"""Taiji's answer format, category paths, prompts (no hint leak) and the two POPO rewards."""

import pytest
import torch

from recstack.cascade import history_features
from recstack.data.batch import Candidates
from recstack.data.jagged import Jagged
from recstack.errors import ConfigError, DataError
from recstack.llm.taiji.answer import format_answer, parse_output, with_answer
from recstack.llm.taiji.categories import CategoryPaths, level_accuracy, matched_levels
from recstack.llm.taiji.embedding import CatalogueSearch, TextEmbedder
from recstack.llm.taiji.prompting import TaijiPrompts, build_contexts
from recstack.llm.taiji.rewards import RewardConfig, TaijiRewards, category_match, rank_reward
from recstack.registry import build
from tests.llm.taiji_data import BagOfWordsModel, categorised_dataset


@pytest.fixture(scope="module")
def dataset():
    return categorised_dataset()


def test_answer_round_trip_and_lenient_keys():
    text = "She buys polish often.\n" + format_answer(("Makeup", "Nails"), "a  bright\npolish")
    parsed = parse_output(text)
    assert parsed.well_formed and parsed.format_reward == 1.0
    assert parsed.answer.category == ("Makeup", "Nails") and parsed.answer.description == "a bright polish"
    assert parsed.reasoning == "She buys polish often."
    loose = parse_output("x <ANSWER>\n Intent : red lips \n CATEGORY: Makeup >Lips\n</Answer>")
    assert loose.well_formed and loose.answer.category == ("Makeup", "Lips")
    # the last block counts
    two = parse_output(format_answer(("A",), "first") + format_answer(("B",), "second"))
    assert two.answer.category == ("B",)
    assert with_answer("  ", ("A",), "d").startswith("<answer>")


@pytest.mark.parametrize(
    "text",
    [
        "no answer block at all",
        "<answer>\ncategory: Makeup\nintent: lips\n",  # never closed
        "<answer>\ncategory:\nintent: lips\n</answer>",  # empty category
        "<answer>\ncategory: Makeup > Lips\n</answer>",  # no description
        "",
    ],
)
def test_broken_outputs_get_format_reward_zero(text):
    assert parse_output(text).format_reward == 0.0


def test_category_paths_strip_the_common_root(dataset):
    categories = CategoryPaths.from_dataset(dataset)
    assert categories.root == ("Beauty",)
    assert set(categories.first_levels()) == {"Makeup", "Hair Care", "Fragrance"}
    assert all(len(categories[i]) == 2 for i in range(1, dataset.num_items + 1))
    assert categories.normalise(("beauty", "Makeup", "Nails")) == ("Makeup", "Nails")
    assert matched_levels(("makeup", " Nails"), ("Makeup", "Nails")) == 2
    assert level_accuracy(("Makeup", "Lips"), ("Makeup", "Nails")) == {"first_level": True, "leaf": False}
    with pytest.raises(DataError, match="no items column 'genre'"):
        from recstack.llm.taiji.categories import CategoryConfig

        CategoryPaths.from_dataset(dataset, CategoryConfig(column="genre"))


def test_contexts_and_prompts_keep_the_hint_out_of_the_student_prompt(dataset):
    categories = CategoryPaths.from_dataset(dataset)
    prompts = TaijiPrompts(dataset, categories)
    train = build_contexts(dataset, [1, 2], "train_last")
    full = dataset.sequences(before="valid").row(1).tolist()
    assert train[0].history == full[:-1] and train[0].target == full[-1]
    test = build_contexts(dataset, [1], "test")[0]
    assert test.history == dataset.sequences(before="test").row(1).tolist()
    hint = prompts.item_text(train[0].target)
    student = prompts.student(train[0])[-1]["content"]
    teacher = prompts.teacher(train[0])[-1]["content"]
    assert hint in teacher and "Hint" in teacher
    assert "Hint" not in student and "<answer>" in student and "Top-level categories" in student
    assert prompts.item_text(train[0].history[-1]) in student
    with pytest.raises(DataError, match="needs the chosen item"):
        prompts.teacher(build_contexts(dataset, [1], "features")[0])


def test_semantic_reward_partial_credit_and_rank_reward():
    assert category_match(("Makeup", "Lips"), ("Makeup", "Nails"), "prefix") == 0.5
    assert category_match(("Makeup", "Lips"), ("Makeup", "Nails"), "first_level") == 1.0
    assert category_match(("Makeup", "Lips"), ("Makeup", "Nails"), "exact") == 0.0
    assert category_match(("Makeup", "Nails"), ("Makeup", "Nails"), "exact") == 1.0
    ranks = torch.tensor([1, 3, 0])
    assert rank_reward(ranks, "ndcg").tolist() == pytest.approx([1.0, 0.5, 0.0])
    assert rank_reward(ranks, "reciprocal").tolist() == pytest.approx([1.0, 1 / 3, 0.0])
    assert rank_reward(ranks, "hit").tolist() == [1.0, 1.0, 0.0]


def test_rewards_score_outputs_and_report_broken_format(dataset):
    categories = CategoryPaths.from_dataset(dataset)
    embedder = TextEmbedder(model=BagOfWordsModel())
    search = CatalogueSearch(dataset, embedder, cache=False)
    rewards = TaijiRewards(categories, RewardConfig(id_k=5, format_weight=0.2), search, embedder)
    ctx = build_contexts(dataset, [1], "train_last")[0]
    target = categories[ctx.target]
    title = dataset.items["title"][ctx.target - 1]
    good = format_answer(target, title)  # the exact title: the true item is the top text match
    half = format_answer((target[0], "Nowhere"), "something unrelated entirely")
    broken = "I think they want " + title
    out = rewards.score([good, half, broken], [ctx, ctx, ctx])
    assert out.well_formed.tolist() == [True, True, False]
    assert out.rewards[:, 0].tolist() == pytest.approx([1.2, 0.7, 0.0])
    assert out.rewards[0, 1] == pytest.approx(1.0)  # rank 1 among the retrieved items
    assert out.rewards[2].tolist() == [0.0, 0.0]
    assert out.stats["format_broken"] == pytest.approx(1 / 3)
    with pytest.raises(ConfigError, match="ranker"):
        TaijiRewards(categories, RewardConfig(id_mode="ranker"), search, embedder)


def test_id_reward_from_a_frozen_ranker(dataset):
    ranker = build(
        "ranker",
        {
            "name": "dcn_din_mmoe",
            "features": {"dim": 4},
            "samples": {"max_history": 4},
            "deep_hidden": [8],
            "expert_hidden": [8],
            "tower_hidden": [4],
            "attention_hidden": [4],
            "num_experts": 2,
            "train": {"epochs": 1, "batch_size": 128, "progress": False},
        },
    ).fit(dataset)
    categories = CategoryPaths.from_dataset(dataset)
    embedder = TextEmbedder(model=BagOfWordsModel())
    search = CatalogueSearch(dataset, embedder, cache=False)
    rewards = TaijiRewards(categories, RewardConfig(id_mode="ranker", id_k=4), search, embedder, ranker, dataset)
    ctx = build_contexts(dataset, [3], "train_last")[0]
    out = rewards.score([format_answer(("Makeup", "Lips"), "a red lipstick"), "broken"], [ctx, ctx])
    # by hand: the intent's top 4 items outside the history, scored by the ranker for this user
    items, scores = search.search(
        embedder.encode(["Makeup > Lips: a red lipstick"]), 4, Jagged.from_lists([ctx.history])
    )
    assert not set(items[0].tolist()) & set(ctx.history)
    batch = dataset.user_batch(torch.tensor([3]), before="valid", features=history_features(dataset))
    probs = ranker.score(batch, Candidates.from_topk(items, scores, "intent"))[ranker.primary_task]
    expected = float(probs[0][items[0] > 0].mean())
    assert float(out.rewards[0, 1]) == pytest.approx(expected, rel=1e-5)
    assert 0 < expected < 1 and float(out.rewards[1, 1]) == 0.0
