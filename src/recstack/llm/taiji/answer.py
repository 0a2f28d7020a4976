"""The structured answer that ends every Taiji chain of thought, its parser and its format check.

    ...free-text reasoning...
    <answer>
    category: Makeup > Nails > Nail Polish
    intent: a bright nail polish for the summer
    </answer>

intent = category path (levels joined by " > ") + a short description (METHODS.md §2.1, RUPR). The
parser takes the last <answer> block; keys are case-insensitive and may come in any order. An output
is well-formed (format reward 1) when the block is closed, the category has at least one level and
the description is not empty; anything else has format reward 0 and no parsed intent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from recstack.llm.taiji.categories import Path, split_path

OPEN, CLOSE = "<answer>", "</answer>"
ANSWER_INSTRUCTIONS = (
    "Reason step by step about what the user wants next. Then end with exactly this block:\n"
    f"{OPEN}\ncategory: <level 1> > <level 2> > ...\nintent: <one short sentence>\n{CLOSE}"
)
_KEY = re.compile(r"^\s*(category|intent)\s*[:：]\s*(.*?)\s*$", re.IGNORECASE)


@dataclass
class Answer:
    category: Path
    description: str

    @property
    def intent_text(self) -> str:
        """The intent as one line of text (what the ID reward embeds): "A > B: description"."""
        return f"{' > '.join(self.category)}: {self.description}"


@dataclass
class ParsedOutput:
    reasoning: str  # the text before the answer block (the chain of thought), stripped
    answer: Answer | None  # None when the output breaks the format
    well_formed: bool

    @property
    def format_reward(self) -> float:
        return 1.0 if self.well_formed else 0.0


def format_answer(category: Path, description: str) -> str:
    return f"{OPEN}\ncategory: {' > '.join(category)}\nintent: {' '.join(description.split())}\n{CLOSE}"


def parse_output(text: str) -> ParsedOutput:
    """Split a model output into reasoning and answer; the last <answer> block counts."""
    start = text.lower().rfind(OPEN)
    if start < 0:
        return ParsedOutput(text.strip(), None, False)
    end = text.lower().find(CLOSE, start)
    body = text[start + len(OPEN) : end if end >= 0 else len(text)]
    fields: dict[str, str] = {}
    for line in body.splitlines():
        match = _KEY.match(line)
        if match and match.group(1).lower() not in fields:
            fields[match.group(1).lower()] = match.group(2)
    category = split_path(fields.get("category", ""))
    description = " ".join(fields.get("intent", "").split())
    answer = Answer(category, description) if category else None
    well_formed = end >= 0 and answer is not None and bool(description)
    return ParsedOutput(text[:start].strip(), answer, well_formed)


def with_answer(reasoning: str, category: Path, description: str) -> str:
    """A complete output: the reasoning followed by a well-formed answer block."""
    head = reasoning.strip()
    return (head + "\n" if head else "") + format_answer(category, description)
