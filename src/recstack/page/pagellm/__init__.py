"""PageLLM (METHODS.md §2.2): whole-page generation with page- and item-level rewards and PPO.

config.py (every [I] a field) -> context.py (the pool a page is written from) -> model.py (item tokens,
the transformer policy) / llm_policy.py (the LLM option), picked in backbones.py -> pairs.py (target
pages, four preference families) -> rewards.py (reward models, their mix) -> sft.py, ppo.py ->
arranger.py (`page: {name: pagellm}` in a run config).
"""
