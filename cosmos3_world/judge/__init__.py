"""The Reasoner success judge: Cosmos3's own vision-language tower (transformers) scores imagined episodes."""

from .frames import as_frames, sample_indices
from .judge import DEFAULT_QUESTION, ReasonerJudge
from .loading import load_reasoner, share_reasoner, unique_bytes, vision_tensors
from .processor import ReasonerProcessor

__all__ = [
    "DEFAULT_QUESTION",
    "ReasonerJudge",
    "ReasonerProcessor",
    "as_frames",
    "load_reasoner",
    "sample_indices",
    "share_reasoner",
    "unique_bytes",
    "vision_tensors",
]
