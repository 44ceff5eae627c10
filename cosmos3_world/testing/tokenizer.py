"""A tiny real tokenizer (byte-level BPE with the Qwen special tokens and chat template), trained on the fly."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..engine.prompts import SYSTEM_PROMPT_IMAGE, SYSTEM_PROMPT_VIDEO, VIEW_POINT_FRAMING, action_caption

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

# Qwen2.5-VL / Qwen3-VL special tokens, in the checkpoint's order (appended after the BPE vocabulary there too).
TINY_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# Qwen2 pre-tokenizer split: contractions, words with one leading non-letter, single digits, punctuation runs.
_QWEN_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Qwen-style ChatML template: `<|im_start|>role\n...<|im_end|>\n` per turn, no default system turn;
# content may be a string or a list of text/image/video parts. `add_vision_id` is accepted and ignored.
TINY_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}"
    "{{- message['content'] -}}"
    "{%- else -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'text' -%}{{- part['text'] -}}"
    "{%- elif part['type'] == 'image' -%}{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif part['type'] == 'video' -%}{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

_TINY_BPE_VOCAB_SIZE = 768

_VERBS = ("Pick up the", "Push the", "Move the", "Put the", "Grasp the", "Slide the", "Place the", "Lift the")
_OBJECTS = ("red cube", "blue bowl", "green block", "towel", "cup", "spoon", "carrot", "pot lid", "sponge", "T block")
_PLACES = ("the bowl", "the plate", "the sink", "the left side", "the shelf", "the basket", "the table", "the target")
_TASKS = (
    "Open the drawer and put the spoon inside",
    "Close the top drawer of the cabinet",
    "Turn the faucet on, then wipe the table with the towel",
    "Stack the green block on the red cube",
    "Fold the cloth in half from left to right",
    "Walk to the door and open it!",
    "Drive forward and turn right at the intersection",
    "Is the cup on the shelf?",
)


def _tiny_corpus() -> list[str]:
    """Deterministic robot-instruction and JSON-caption text, the kind of text the prompts carry."""
    pairs = [(verb, obj) for verb in _VERBS for obj in _OBJECTS]
    instructions = [
        f"{verb} {obj} to {place}" for i, (verb, obj) in enumerate(pairs) for place in _PLACES[i % 3 :: 3]
    ] + list(_TASKS)
    views = [*VIEW_POINT_FRAMING, None]
    captions = [
        action_caption(
            text,
            view_point=views[i % len(views)],
            num_frames=(17, 33, 61, 121)[i % 4],
            fps=(24.0, 15.0, 5.0, 10.0)[i % 4],
            height=(480, 256, 704, 720)[i % 4],
            width=(640, 320, 1280, 960)[i % 4],
        )
        for i, text in enumerate(instructions)
    ]
    return [SYSTEM_PROMPT_VIDEO, SYSTEM_PROMPT_IMAGE, *instructions, *captions]


def build_tiny_tokenizer(save_dir: str | Path) -> PreTrainedTokenizerFast:
    """Train a small byte-level BPE with Qwen special tokens and chat template, save it to ``save_dir``, reload it.

    Same ids on every run; total vocabulary stays under 1024 so tiny models can use ``vocab_size=2048``.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_QWEN_SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    bpe.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=_TINY_BPE_VOCAB_SIZE,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_tiny_corpus(), trainer)
    bpe.add_special_tokens(list(TINY_SPECIAL_TOKENS))

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=list(TINY_SPECIAL_TOKENS),
        chat_template=TINY_CHAT_TEMPLATE,
        model_max_length=32768,
    )
    tokenizer.save_pretrained(str(save_dir))
    return AutoTokenizer.from_pretrained(str(save_dir))
