"""Subscription topics (``templates/_topics.yaml``): what a customer can choose to hear about.

Topics apply to every channel; a customer is subscribed to a topic unless they said
otherwise. Campaigns and journeys name their topic, and a message of a topic the customer
unsubscribed from is not sent (``unsubscribed from <topic>``).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from clientela.yamlfile import load_model, read_source

FILE = "_topics.yaml"


class Topics(BaseModel):
    model_config = ConfigDict(extra="forbid")

    wording: str = Field(min_length=1, max_length=64, description="version of the text shown")
    topics: dict[str, dict[str, str]] = Field(
        default_factory=dict, description="name -> label per language"
    )

    def label(self, topic: str, locale: str) -> str:
        labels = self.topics.get(topic, {})
        return labels.get(locale) or labels.get("en") or topic


def load(templates_dir: Path) -> Topics:
    """The topics file of a templates folder (none: no topics); SpecError with file and line
    for a bad one."""
    path = templates_dir / FILE
    if not path.is_file():
        return Topics(wording="none")
    return _load(str(path), path.stat().st_mtime_ns)


@lru_cache(maxsize=8)
def _load(path: str, _mtime: int) -> Topics:
    topics, _ = load_model(read_source(Path(path)), path, Topics, "docs/tracking.md")
    return topics
