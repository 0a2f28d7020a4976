"""Training core: one Trainer for every neural component (DESIGN.md, "Training core").

from recstack.train import Trainer, TrainConfig
result = Trainer(model, TrainConfig(epochs=5), train_data, evaluate=evaluate).fit()
"""

from recstack.train.batches import BatchSource, CallableBatchSource, TensorBatchSource, move_to_device
from recstack.train.checkpoint import atomic_dir, load_weights, save_weights
from recstack.train.config import TrainConfig
from recstack.train.distributed import DistContext, launched_distributed
from recstack.train.schedule import WarmupCosine
from recstack.train.seeding import seed_everything
from recstack.train.trainer import Trainer, TrainResult

__all__ = [
    "BatchSource",
    "CallableBatchSource",
    "DistContext",
    "TensorBatchSource",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "WarmupCosine",
    "atomic_dir",
    "launched_distributed",
    "load_weights",
    "move_to_device",
    "save_weights",
    "seed_everything",
]
