"""The Taiji pipeline end to end, stage by stage, each stage resumable (METHODS.md §2.1).

    pipe = TaijiPipeline(TaijiConfig(dataset="amazon-beauty", users=200), "runs/taiji")
    pipe.reason()          # RUPR: teacher CoTs with the answer as a hint        -> reason/part-*.jsonl
    pipe.filter()          # ORFT: student PPL of the chosen item, keep <= median -> filter/kept.jsonl
    pipe.sft()             # LoRA SFT of the student on the kept CoTs            -> sft/adapter
    pipe.popo()            # POPO RL from the SFT model (weighting from config)   -> popo-<name>/adapter
    pipe.features("popo-mgda")   # student outputs -> MiniLM -> semantic IDs    -> features/popo-mgda.parquet
    pipe.evaluate("popo-mgda")   # next-intent accuracy on held-out users        -> eval/<stage>/summary.json

Users: `eval_users` held-out users are drawn first (seeded) and never trained on; `users` training
users are drawn from the rest; both lists are kept in users.json so a resumed run uses the same ones
(users.py). Per-user stages write JSONL parts of `part_size` users atomically (parts.py): a killed job
redoes at most the part it was writing. SFT and POPO resume from their last checkpoint (every
`save_every` steps). Models come from `teacher` / `student` (LLMConfig mappings: a local folder, a hub
id, "tiny", or an OpenAI-compatible URL for the teacher; {} = the offline SmolLM2-135M-Instruct). Each
stage loads the models it needs and lets them go when it ends (models.py), so a whole run in one
process never holds two stages' models at once. The stage bodies live in chains.py (reason, filter),
training.py (sft, popo) and inference.py (features, evaluate); this class holds what they share.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from recstack.config import to_dict
from recstack.data.dataset import Dataset
from recstack.llm.taiji.categories import CategoryPaths
from recstack.llm.taiji.chains import run_filter, run_reason
from recstack.llm.taiji.config import TaijiConfig
from recstack.llm.taiji.embedding import TextEmbedder
from recstack.llm.taiji.evaluate import baselines
from recstack.llm.taiji.inference import run_evaluate, run_features
from recstack.llm.taiji.models import load_stage_model, release_memory, releases_models
from recstack.llm.taiji.parts import PartStore, write_in_parts
from recstack.llm.taiji.prompting import TaijiPrompts, UserContext
from recstack.llm.taiji.training import run_popo, run_sft
from recstack.llm.taiji.users import chosen_users, split_contexts
from recstack.progress import progress_bar
from recstack.train.checkpoint import write_json

T = TypeVar("T")


class TaijiPipeline:
    def __init__(
        self,
        config: TaijiConfig,
        work_dir: str | Path,
        dataset: Dataset | None = None,
        llm_factory: Callable[[dict[str, Any]], Any] | None = None,
        embedder: TextEmbedder | None = None,
        progress: bool = True,
    ) -> None:
        self.config, self.work = config, Path(work_dir)
        self.dataset = dataset if dataset is not None else Dataset.load(config.dataset)
        self.categories = CategoryPaths.from_dataset(self.dataset, config.categories)
        self.embedder = embedder or TextEmbedder(config.text_encoder)
        self.progress = progress
        if llm_factory is None:
            from recstack.llm.config import load_llm

            llm_factory = load_llm
        self.llm_factory: Callable[[dict[str, Any]], Any] = llm_factory
        self.work.mkdir(parents=True, exist_ok=True)
        write_json(self.work / "config.json", to_dict(config), sort_keys=False)
        self.text_prompts = TaijiPrompts(self.dataset, self.categories, config.prompts)  # item texts

    # ---- users, contexts, models ---------------------------------------------------------------
    def users(self) -> dict[str, list[int]]:
        return chosen_users(self.work / "users.json", self.dataset, self.config)

    def contexts(self, which: str) -> list[UserContext]:
        """ "train": train_last contexts of the training users; "eval": test contexts of the held-out users."""
        return split_contexts(self.dataset, self.categories, self.users()[which], which)

    def prompts(self, model: Any) -> TaijiPrompts:
        return TaijiPrompts(self.dataset, self.categories, self.config.prompts, model.count_tokens)

    def load_model(self, role: str, stage: str | None = None) -> Any:
        """The teacher, or the student after `stage` (None/"base", "sft", "sft-all", "popo-<name>")."""
        spec = self.config.teacher if role == "teacher" else self.config.student
        return load_stage_model(self.llm_factory, spec, self.work, stage)

    def release_models(self) -> None:
        """What a finished stage leaves behind: the sentence model the embedder loaded, garbage, CUDA cache."""
        self.embedder.release()
        release_memory()

    def write_parts(
        self,
        store: PartStore,
        todo: Sequence[T],
        desc: str,
        user: Callable[[T], int],
        records: Callable[[list[T]], Sequence[dict[str, Any]]],
    ) -> None:
        """`records` of each chunk of `part_size` todo entries as one part of `store`, with a progress bar."""
        bar = progress_bar(total=len(todo), desc=desc, disable=not self.progress)
        write_in_parts(store, todo, self.config.part_size, user, records, bar)

    # ---- stages --------------------------------------------------------------------------------
    @releases_models
    def reason(self) -> dict[str, Any]:
        """RUPR over the training users, `part_size` users per part."""
        return run_reason(self)

    @releases_models
    def filter(self) -> dict[str, Any]:
        """ORFT: the student's PPL of each sample's chosen item (parts), then the keep rule over all samples."""
        return run_filter(self)

    @releases_models
    def sft(self, source: str = "kept") -> dict[str, Any]:
        """LoRA SFT on the kept samples (stage "sft") or on every RUPR sample (source "all", stage "sft-all")."""
        return run_sft(self, source)

    @releases_models
    def popo(
        self, weighting: dict[str, Any] | None = None, base: str | None = "sft", name: str | None = None
    ) -> dict[str, Any]:
        """POPO from the `base` stage's student (its adapter merged; a fresh LoRA trains) -> popo-<name>."""
        return run_popo(self, weighting, base, name)

    @releases_models
    def features(self, stage: str | None = None) -> Path:
        """Student outputs on the users' train histories (parts) -> semantic-ID features Parquet."""
        return run_features(self, stage)

    @releases_models
    def evaluate(self, stage: str | None = None) -> dict[str, Any]:
        """Next-intent accuracy of the student after `stage` on the held-out users (parts)."""
        return run_evaluate(self, stage)

    def baselines(self) -> dict[str, dict[str, float]]:
        train_targets = [c.target for c in self.contexts("train")]
        return baselines(self.categories, train_targets, self.contexts("eval"))
