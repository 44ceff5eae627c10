"""Prompts for Cosmos3: the action-mode JSON caption and prompt token ids.

Cosmos3 has no separate text encoder: the transformer reads token ids produced by the
tokenizer's chat template, followed by eos and ``<|vision_start|>``. Every string and rule
here is a fact the model was trained with (read off the diffusers reference pipeline), so
changing any of them changes what the model sees.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

# The trained system prompts, typo ("a give prompt") included.
SYSTEM_PROMPT_VIDEO = "You are a helpful assistant who will generate videos from a give prompt."
SYSTEM_PROMPT_IMAGE = "You are a helpful assistant who will generate images from a give prompt."

VISION_START_TOKEN = "<|vision_start|>"

# Camera view -> the sentence that fills the caption's `cinematography.framing` field.
VIEW_POINT_FRAMING: Mapping[str, str] = MappingProxyType(
    {
        "ego_view": "This video is captured from a first-person perspective looking at the scene.",
        "third_person_view": (
            "This video is captured from a third-person perspective looking towards the agent from the front."
        ),
        "wrist_view": "This video is captured from a wrist-mounted camera.",
        "concat_view": "This video contains concatenated views from multiple camera perspectives.",
    }
)

# Action resolution tier -> canvases (H, W); each canvas stands for the aspect ratio H / W.
# Order matters: ties in aspect-ratio distance go to the earlier canvas, as in the reference.
# Caption aspect-ratio labels, "W,H"; the closest to width / height wins (first on ties).
_ASPECT_RATIO_LABELS = ("1,1", "4,3", "3,4", "16,9", "9,16")


def _check_positive_int(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}.")


def action_caption(
    instruction: str,
    *,
    view_point: str | None,
    num_frames: int,
    fps: float,
    height: int,
    width: int,
) -> str:
    """The structured JSON caption the action model was trained on, serialised with ``json.dumps``.

    An unknown ``view_point`` (or ``None``) drops the framing field; an unknown one also logs a warning.
    """
    if not isinstance(instruction, str):
        raise ValueError(f"instruction must be a str, got {type(instruction).__name__}.")
    _check_positive_int(num_frames, "num_frames")
    _check_positive_int(height, "height")
    _check_positive_int(width, "width")
    if isinstance(fps, bool) or not isinstance(fps, numbers.Real) or not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be a finite number > 0, got {fps!r}.")

    seconds_total = num_frames / fps
    minutes, seconds = divmod(round(seconds_total), 60)
    description = instruction.strip()
    if description and not description.endswith((".", "!", "?")):
        description += "."

    caption: dict[str, Any] = {}
    if view_point is not None:
        framing = VIEW_POINT_FRAMING.get(view_point)
        if framing is None:
            logger.warning(
                "Unknown view_point=%r (known: %s); the caption gets no cinematography.framing field.",
                view_point,
                sorted(VIEW_POINT_FRAMING),
            )
        else:
            caption["cinematography"] = {"framing": framing}
    ratio = width / height
    caption["actions"] = [{"time": f"0:00-{minutes}:{seconds:02d}", "description": description}]
    caption["duration"] = f"{int(seconds_total)}s"
    caption["fps"] = float(fps)
    caption["resolution"] = {"H": int(height), "W": int(width)}
    caption["aspect_ratio"] = min(
        _ASPECT_RATIO_LABELS, key=lambda label: abs(int(label.split(",")[0]) / int(label.split(",")[1]) - ratio)
    )
    return json.dumps(caption)


def check_length(ids: Sequence[int], max_len: int, *, name: str = "prompt") -> Sequence[int]:
    """Return ``ids`` unchanged, or raise ValueError if the prompt ``name`` is longer than ``max_len`` tokens."""
    if len(ids) > max_len:
        raise ValueError(f"{name} is {len(ids)} tokens long, more than the maximum of {max_len} tokens.")
    return ids


class PromptEncoder:
    """Turns instructions into the token ids the transformer reads, exactly as the reference pipeline does.

    Each prompt is ``apply_chat_template([system?, user])`` with a generation prompt, followed by
    eos and ``<|vision_start|>`` (the start-of-generation marker).
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, use_system_prompt: bool = True) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("tokenizer has no chat template; Cosmos3 prompts go through the chat template.")
        if tokenizer.eos_token_id is None:
            raise ValueError("tokenizer has no eos token; Cosmos3 prompts end with eos + <|vision_start|>.")
        vision_start_id = tokenizer.get_vocab().get(VISION_START_TOKEN)
        if vision_start_id is None:
            raise ValueError(f"tokenizer has no {VISION_START_TOKEN} token; Cosmos3 prompts end with it.")
        self.tokenizer = tokenizer
        self.use_system_prompt = use_system_prompt
        self.suffix_ids: tuple[int, int] = (int(tokenizer.eos_token_id), int(vision_start_id))

    def prompt_ids(self, text: str, *, image: bool = False) -> list[int]:
        """Ids of ``text`` used verbatim as the user turn (image or video system prompt), plus eos and vision start."""
        if not isinstance(text, str):
            raise ValueError(f"text must be a str, got {type(text).__name__}.")
        conversation = []
        if self.use_system_prompt:
            conversation.append({"role": "system", "content": SYSTEM_PROMPT_IMAGE if image else SYSTEM_PROMPT_VIDEO})
        conversation.append({"role": "user", "content": text})
        encoding = self.tokenizer.apply_chat_template(
            conversation, tokenize=True, add_generation_prompt=True, add_vision_id=False, return_dict=True
        )
        return [int(i) for i in encoding["input_ids"]] + list(self.suffix_ids)

    def action_prompt_ids(
        self, instruction: str, *, view_point: str | None, num_frames: int, fps: float, height: int, width: int
    ) -> list[int]:
        """Ids of the action JSON caption for ``instruction``; a single frame uses the image system prompt."""
        caption = action_caption(
            instruction, view_point=view_point, num_frames=num_frames, fps=fps, height=height, width=width
        )
        return self.prompt_ids(caption, image=num_frames == 1)

    def negative_prompt_ids(self, negative_prompt: str = "", *, image: bool = False) -> list[int]:
        """Ids of the unconditional prompt: the negative prompt verbatim, through the same chat template."""
        return self.prompt_ids(negative_prompt, image=image)


def load_tokenizer(
    path_or_repo: str, subfolder: str | None = "text_tokenizer", **hub_kwargs: Any
) -> PreTrainedTokenizerBase:
    """Load the checkpoint's text tokenizer (``subfolder=None`` for a directory holding it directly)."""
    from transformers import AutoTokenizer

    if subfolder:
        hub_kwargs["subfolder"] = subfolder
    return AutoTokenizer.from_pretrained(path_or_repo, **hub_kwargs)
