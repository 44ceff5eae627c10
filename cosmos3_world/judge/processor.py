"""The Reasoner's input processor, offline on CPU without torchvision.

Qwen3-VL's own processor needs torchvision (no CPU build here), so this pairs transformers' PIL
image processor (`Qwen2VLImageProcessorPil`) with the tokenizer and does the processor's part:
render the chat template, expand each `<|image_pad|>` to its image's `grid_thw.prod() // merge**2`
tokens, left-pad the batch (the next-token logits are then at the last position of every row), and
build `mm_token_type_ids` (1 on image tokens). Without `mm_token_type_ids` transformers silently
gives image tokens text positions, so it is always returned.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch


class ReasonerProcessor:
    """Frames + text -> the Reasoner's inputs (input_ids, attention_mask, mm_token_type_ids, pixel_values, grid)."""

    def __init__(self, tokenizer: Any, image_processor: Any, image_token_id: int):
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.image_token_id = int(image_token_id)
        self.image_token = tokenizer.convert_ids_to_tokens(self.image_token_id)
        self.merge_size = int(image_processor.merge_size)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad is None:
            raise ValueError("the tokenizer has neither a pad nor an eos token to pad batches with")
        self.pad_token_id = int(pad)

    @classmethod
    def from_pretrained(cls, root: str | Path, config: Any) -> "ReasonerProcessor":
        """The processor of a bundle root: tokenizer at the root (else text_tokenizer/), image processor from
        preprocessor_config.json (else processor_config.json, else the vision config's patch sizes)."""
        from transformers import AutoTokenizer, Qwen2VLImageProcessorPil

        root = Path(root)
        tok_dir = root if (root / "tokenizer_config.json").is_file() else root / "text_tokenizer"
        if not (tok_dir / "tokenizer_config.json").is_file():
            raise FileNotFoundError(f"{root}: no tokenizer (tokenizer_config.json at the root or in text_tokenizer/)")
        tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
        vision = config.vision_config
        settings: dict[str, Any] = dict(
            patch_size=vision.patch_size,
            merge_size=vision.spatial_merge_size,
            temporal_patch_size=vision.temporal_patch_size,
        )
        if (root / "preprocessor_config.json").is_file():
            settings.update(_image_settings(json.loads((root / "preprocessor_config.json").read_text())))
        elif (root / "processor_config.json").is_file():
            settings.update(
                _image_settings(json.loads((root / "processor_config.json").read_text()).get("image_processor", {}))
            )
        image_processor = Qwen2VLImageProcessorPil(**settings)
        found = tokenizer.convert_tokens_to_ids("<|image_pad|>")
        if found != config.image_token_id:
            raise ValueError(
                f"{root}: config.json's image_token_id {config.image_token_id} is not the tokenizer's <|image_pad|> "
                f"({found}): the config and the tokenizer belong to different models"
            )
        return cls(tokenizer, image_processor, config.image_token_id)

    def prompt(self, num_images: int, text: str) -> str:
        """One user turn (the images in order, then the text) and the assistant's generation prompt."""
        content = [{"type": "image"} for _ in range(num_images)] + [{"type": "text", "text": text}]
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
        )

    def __call__(
        self, episodes: list[list[np.ndarray]], texts: list[str], device: torch.device, max_pixels: int | None = None
    ) -> dict[str, torch.Tensor]:
        """Inputs for B prompts, prompt b showing the frames `episodes[b]` ([H, W, 3] uint8 each) then `texts[b]`.

        max_pixels: resize frames to at most this many pixels (default: the image processor's own bound)."""
        images = [f for frames in episodes for f in frames]
        vision = self.image_processor(images=images, return_tensors="pt", **self._size(max_pixels))
        grid = vision["image_grid_thw"]  # [num_images, 3] (t, h, w) in patches
        tokens_per_image = (grid.prod(-1) // self.merge_size**2).tolist()
        rows, start = [], 0
        for frames, text in zip(episodes, texts):
            counts = tokens_per_image[start : start + len(frames)]
            start += len(frames)
            parts = self.prompt(len(frames), text).split(self.image_token)
            if len(parts) != len(frames) + 1:
                raise ValueError(f"the chat template rendered {len(parts) - 1} image slots for {len(frames)} frames")
            expanded = parts[0] + "".join(self.image_token * n + p for n, p in zip(counts, parts[1:]))
            rows.append(self.tokenizer(expanded, add_special_tokens=False)["input_ids"])
        length = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), length), self.pad_token_id, dtype=torch.long)  # [B, L], left-padded
        attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
        for b, r in enumerate(rows):
            input_ids[b, length - len(r) :] = torch.tensor(r)
            attention_mask[b, length - len(r) :] = 1
        mm_token_type_ids = ((input_ids == self.image_token_id) & attention_mask.bool()).long()
        if int(mm_token_type_ids.sum()) != sum(tokens_per_image):
            raise ValueError("the text already holds image tokens: the image placeholders do not match the frames")
        return {
            "input_ids": input_ids.to(device),
            "attention_mask": attention_mask.to(device),
            "mm_token_type_ids": mm_token_type_ids.to(device),
            "pixel_values": vision["pixel_values"].to(device),  # [sum of patches, C * tp * p * p] float32
            "image_grid_thw": grid.to(device),
        }

    def tokens_per_frame(self, height: int, width: int, max_pixels: int | None = None) -> int:
        """Image tokens one [height, width] frame costs (after the processor's resize)."""
        size = self._size(max_pixels).get("size", self.image_processor.size)
        bounds = {"min_pixels": size["shortest_edge"], "max_pixels": size["longest_edge"]}
        return self.image_processor.get_number_of_image_patches(height, width, bounds) // self.merge_size**2

    def _size(self, max_pixels: int | None) -> dict[str, Any]:
        """The image processor's `size` override for a pixel budget ({} keeps its own)."""
        if max_pixels is None:
            return {}
        side = int(self.image_processor.patch_size) * self.merge_size  # one merged patch: the smallest frame
        if not isinstance(max_pixels, int) or max_pixels < side * side:
            raise ValueError(
                f"max_pixels must be an int >= {side * side} (one {side}x{side} merged patch), got {max_pixels!r}"
            )
        low = min(int(self.image_processor.size["shortest_edge"]), max_pixels)
        return {"size": {"shortest_edge": low, "longest_edge": max_pixels}}


_IMAGE_KEYS = ("size", "min_pixels", "max_pixels", "image_mean", "image_std", "resample", "do_resize",
               "do_rescale", "rescale_factor", "do_normalize", "do_convert_rgb", "patch_size", "merge_size",
               "temporal_patch_size")  # fmt: skip


def _image_settings(data: dict[str, Any]) -> dict[str, Any]:
    """The image-processor fields of a saved processor config (bookkeeping and class names dropped)."""
    return {k: v for k, v in data.items() if k in _IMAGE_KEYS}
