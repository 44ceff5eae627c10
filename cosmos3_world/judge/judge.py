"""`ReasonerJudge`: did the robot do what it was told? Cosmos3's own Reasoner answers, from the episode's frames.

The score is P(yes) from the next-token logits of a fixed yes/no question over frames sampled from
the episode (yes and no each pool their capitalisations' first tokens). It is also the env's success
hook (`success=ReasonerJudge(..., threshold=0.5)`, see `envs/success.py`): it asks for the whole
episode's frames, runs at the episode's end or every k chunks, judges a batch of worlds in one
forward (`batch`), and returns P(yes), which the env thresholds and records as the episode's score.
With a `WorldModel`, the judge shares its generator's weights and adds only the ViT.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..model.checkpoint import parse_dtype
from .frames import as_frames, sample_indices
from .loading import load_config, load_reasoner, resolve_root, share_reasoner
from .processor import ReasonerProcessor

if TYPE_CHECKING:
    from transformers import Cosmos3OmniForConditionalGeneration

    from ..engine.world import WorldModel

DEFAULT_QUESTION = (
    "These are {num_frames} frames of a robot episode in time order; the last one shows the end of the episode. "
    'The robot was instructed: "{instruction}". Did the robot complete the instruction by the end of the episode? '
    "Answer yes or no."
)
YES_WORDS = ("Yes", "yes")
NO_WORDS = ("No", "no")


class ReasonerJudge:
    """Success judge of robot episodes by the Cosmos3 Reasoner (transformers `Cosmos3OmniForConditionalGeneration`).

    num_frames/spacing: frames shown per episode (None: all, up to max_frames) and how they are picked
    ("uniform", "last", or an int stride; the last frame always). max_tokens: prompt budget (default the
    model's max_position_embeddings); max_pixels: resize bound per frame (default the image processor's).
    question: the yes/no prompt, with {instruction} and {num_frames}. Hook attributes (envs/success.py):
    threshold, at_end (judge only the episode's last chunk), every (else every k-th chunk); reward "score"
    returns P(yes) from the hook, "success" the bool score >= threshold.
    """

    def __init__(
        self,
        model: "Cosmos3OmniForConditionalGeneration",
        processor: ReasonerProcessor,
        *,
        num_frames: int | None = 8,
        spacing: str | int = "uniform",
        max_frames: int = 32,
        max_tokens: int | None = None,
        max_pixels: int | None = None,
        question: str = DEFAULT_QUESTION,
        threshold: float = 0.5,
        at_end: bool = True,
        every: int = 1,
        reward: str = "score",
    ):
        if num_frames is not None and (
            not isinstance(num_frames, int) or isinstance(num_frames, bool) or num_frames < 1
        ):
            raise ValueError(f"num_frames must be a positive int or None (all frames), got {num_frames!r}")
        if not isinstance(max_frames, int) or max_frames < 1:
            raise ValueError(f"max_frames must be a positive int, got {max_frames!r}")
        if num_frames is not None and num_frames > max_frames:
            raise ValueError(f"num_frames={num_frames} is more than max_frames={max_frames}")
        sample_indices(1, 1, spacing)  # validates spacing
        if "{instruction}" not in question:
            raise ValueError("question must contain the '{instruction}' placeholder")
        if not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise ValueError(f"every must be a positive int, got {every!r}")
        if reward not in ("success", "score"):
            raise ValueError(f"reward must be 'success' (the hook returns a bool) or 'score' (P(yes)), got {reward!r}")
        self.model = model
        self.processor = processor
        self.num_frames, self.spacing, self.max_frames, self.question = num_frames, spacing, max_frames, question
        self.max_tokens = max_tokens or int(model.config.text_config.max_position_embeddings)
        self.max_pixels = max_pixels
        processor._size(max_pixels)  # validates max_pixels
        # success-hook attributes (envs/success.py): judge the whole episode so far, at its end or every k chunks
        self.threshold, self.at_end, self.every, self.episode_frames = float(threshold), bool(at_end), every, True
        self.reward = reward
        self.yes_ids, self.no_ids = _answer_ids(processor.tokenizer)

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        bundle: str | os.PathLike,
        world_model: "WorldModel | None" = None,
        *,
        device: str | torch.device | None = None,
        torch_dtype: torch.dtype | str | None = None,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        local_files_only: bool | None = None,
        token: str | bool | None = None,
        **judge_kwargs: Any,
    ) -> "ReasonerJudge":
        """The judge of a bundle. With `world_model`, its generator's understanding pathway is shared (no second
        copy; the judge runs on the generator's device and dtype) and only the ViT is read; without, transformers
        loads the whole Reasoner from the bundle root (torch_dtype None -> float32, device None -> CPU)."""
        hub = dict(revision=revision, cache_dir=cache_dir, local_files_only=local_files_only, token=token)
        root = resolve_root(bundle, shared=world_model is not None, **hub)
        config = load_config(root)
        dtype = parse_dtype(torch_dtype)
        if world_model is not None:
            generator = world_model.generator
            if dtype is not None and dtype != generator.dtype:
                raise ValueError(
                    f"torch_dtype={dtype} differs from the world model's generator ({generator.dtype}): a judge "
                    "sharing its weights runs in the generator's dtype (pass torch_dtype=None)"
                )
            if device is not None and not _same_device(torch.device(device), generator.device):
                raise ValueError(
                    f"device={device} differs from the world model's generator ({generator.device}): a judge sharing "
                    "its weights runs on the generator's device (pass device=None)"
                )
            model = share_reasoner(root, config, generator)
        else:
            model = load_reasoner(root, torch.device(device or "cpu"), dtype or torch.float32)
        return cls(model, ReasonerProcessor.from_pretrained(root, config), **judge_kwargs)

    @property
    def device(self) -> torch.device:
        return self.model.device

    # ------------------------------------------------------------------ scoring
    def score(self, frames: Any, instruction: str) -> float:
        """P(yes) in [0, 1] that the episode `frames` ([T, H, W, 3] uint8) achieved `instruction`."""
        return self.score_batch([frames], [instruction])[0]

    def score_batch(self, episodes: Sequence[Any], instructions: Sequence[str]) -> list[float]:
        """`score` of several episodes in one batched forward."""
        logits = self.yes_no_logits(episodes, instructions)  # [B, 2]
        return torch.softmax(logits.float(), dim=-1)[:, 0].tolist()

    @torch.no_grad()
    def yes_no_logits(self, episodes: Sequence[Any], instructions: Sequence[str]) -> torch.Tensor:
        """[B, 2] (yes, no) log-sum-exp of the answer tokens' next-token logits, per episode."""
        if isinstance(episodes, np.ndarray) or len(episodes) != len(instructions):
            raise ValueError(
                "score_batch takes a sequence of episodes and one instruction per episode, got "
                f"{'an array' if isinstance(episodes, np.ndarray) else len(episodes)} episodes and "
                f"{len(instructions)} instructions"
            )
        if not episodes:
            return torch.zeros(0, 2)
        tasks = [_instruction(t, i) for i, t in enumerate(instructions)]
        clips = [self.sample(e, name=f"episodes[{i}]") for i, e in enumerate(episodes)]
        texts = [self.question.format(num_frames=len(c), instruction=t) for c, t in zip(clips, tasks)]
        inputs = self.processor(clips, texts, self.device, self.max_pixels)
        self._check_length(inputs)
        logits = self.model(**inputs, logits_to_keep=1).logits[:, -1].float()  # [B, vocab]
        yes = torch.logsumexp(logits[:, self.yes_ids], dim=-1)
        no = torch.logsumexp(logits[:, self.no_ids], dim=-1)
        return torch.stack([yes, no], dim=-1)

    @torch.no_grad()
    def ask(self, frames: Any, question: str, max_new_tokens: int = 64) -> str:
        """Free-text answer (greedy) to `question` about the episode's sampled frames, e.g. why it failed."""
        if not isinstance(question, str) or not question.strip():
            raise ValueError(f"question must be a non-empty string, got {question!r}")
        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
        inputs = self.processor([self.sample(frames)], [question], self.device, self.max_pixels)
        self._check_length(inputs, extra=max_new_tokens)
        tok = self.processor.tokenizer
        stop = [i for i in {tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")} if isinstance(i, int)]
        out = self.model.generate(
            **inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=self.processor.pad_token_id,
            eos_token_id=stop or None,
        )  # fmt: skip
        return tok.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()

    def sample(self, frames: Any, name: str = "frames") -> list[np.ndarray]:
        """The frames of an episode the judge looks at (validated; `num_frames` of them, spaced by `spacing`)."""
        items = as_frames(frames, name)
        if self.num_frames is None and len(items) > self.max_frames:
            raise ValueError(
                f"{name}: too many frames ({len(items)} > max_frames={self.max_frames}); set num_frames to sample "
                "fewer, or raise max_frames"
            )
        return [items[i] for i in sample_indices(len(items), self.num_frames, self.spacing)]

    def _check_length(self, inputs: dict[str, torch.Tensor], extra: int = 0) -> None:
        length = inputs["input_ids"].shape[1] + extra
        if length > self.max_tokens:
            images = int(inputs["mm_token_type_ids"].sum())
            raise ValueError(
                f"too many frames: the prompt takes {length} tokens ({images} of them image tokens) but the Reasoner "
                f"reads at most {self.max_tokens}; judge fewer frames (num_frames) or smaller ones"
            )

    # ------------------------------------------------------------------ the env's success hook
    def __call__(self, frames: Any, task: str) -> bool | float:
        """Success hook: P(yes) for the episode (the env counts it a success at `threshold` and keeps it as the
        score, so runs can be re-thresholded), or with `reward="success"` the bool `score >= threshold`."""
        return self._verdict(self.score(frames, task))

    def batch(self, frames_list: Sequence[Any], tasks: Sequence[str]) -> list[bool | float]:
        """Success hook, batched over worlds (one forward)."""
        return [self._verdict(s) for s in self.score_batch(frames_list, tasks)]

    def _verdict(self, score: float) -> bool | float:
        return score if self.reward == "score" else score >= self.threshold

    def __repr__(self) -> str:
        return (
            f"ReasonerJudge(num_frames={self.num_frames}, spacing={self.spacing!r}, threshold={self.threshold}, "
            f"at_end={self.at_end}, every={self.every}, device={self.device}, dtype={self.model.dtype})"
        )


def _same_device(asked: torch.device, actual: torch.device) -> bool:
    """Whether `asked` names `actual` ("cuda" names the current cuda device, whichever index it has)."""
    return asked.type == actual.type and (asked.index is None or asked.index == actual.index)


def _instruction(text: Any, index: int) -> str:
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"instructions[{index}] must be a non-empty string, got {text!r}")
    return text.strip()


def _answer_ids(tokenizer: Any) -> tuple[list[int], list[int]]:
    """First token ids of the yes and of the no answers (each capitalisation once); they must differ."""

    def first(words: tuple[str, ...]) -> list[int]:
        return sorted({tokenizer.encode(w, add_special_tokens=False)[0] for w in words})

    yes, no = first(YES_WORDS), first(NO_WORDS)
    if set(yes) & set(no):
        raise ValueError(f"the tokenizer starts 'yes' and 'no' with the same token ({set(yes) & set(no)})")
    return yes, no
