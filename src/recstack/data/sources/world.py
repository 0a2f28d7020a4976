"""The synthetic world as a dataset: a YAML of WorldConfig keys -> the world's impression logs.

    recstack data prepare world --path configs/world-data.yaml       # generate, prepare, store as "world"
    dataset: {name: world, path: configs/world-data.yaml}             # in a run config: prepared on first use

The YAML holds WorldConfig keys (src/recstack/world/config.py; missing keys keep their defaults).
The RawTables carry the full config in `extra["world_config"]`, which `prepare` stores in the
dataset's meta.json: `recstack simulate` rebuilds the exact World that generated a run's training
logs from it, and checks the rebuilt items against the stored items table.
"""

from __future__ import annotations

from pathlib import Path

from recstack.config import from_dict, load_yaml
from recstack.data.sources import source
from recstack.data.tables import RawTables
from recstack.errors import DataError


@source("world")
def load_world(path: str | Path) -> RawTables:
    """Impression logs (click, like, long_view, purchase; scenario, position) of the world in `path`."""
    from recstack.world.config import WorldConfig
    from recstack.world.model import World

    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: the world source reads a YAML file of WorldConfig keys, not a folder")
    config = from_dict(WorldConfig, load_yaml(path), f"{path}")
    return World(config).generate_logs()
