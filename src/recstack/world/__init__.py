"""Synthetic world: seeded users, items, topics and scenarios; impression and sequence logs in the
canonical schema; and a simulator that returns (expected or sampled) feedback for a page."""

from recstack.world.config import FunnelConfig, PolicyConfig, WorldConfig
from recstack.world.logs import EVENT_NAMES
from recstack.world.model import World
from recstack.world.simulator import DEFAULT_PAGE_WEIGHTS, TASKS

__all__ = ["DEFAULT_PAGE_WEIGHTS", "EVENT_NAMES", "TASKS", "FunnelConfig", "PolicyConfig", "World", "WorldConfig"]
