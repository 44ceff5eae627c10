"""Prompts: captions, resolution tiers and token ids must equal the diffusers reference pipeline's."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from diffusers.pipelines.cosmos import pipeline_cosmos3_omni as ref

from cosmos3_world.engine.prompts import (
    SYSTEM_PROMPT_IMAGE,
    SYSTEM_PROMPT_VIDEO,
    VIEW_POINT_FRAMING,
    PromptEncoder,
    action_caption,
    check_length,
    load_tokenizer,
)
from cosmos3_world.testing import TINY_SPECIAL_TOKENS, build_tiny_tokenizer

CAPTION_CASES = [
    ("Pick up the red cube", "ego_view", 17, 24.0, 480, 640),
    ("Pick up the red cube.", "third_person_view", 33, 15, 256, 320),
    ("  Open the drawer!  ", "wrist_view", 61, 5.0, 704, 1280),
    ("Is the cup on the shelf?", "concat_view", 121, 10.0, 1280, 720),
    ("Wipe the table", "top_down_view", 9, 3.0, 320, 192),
    ("Drive forward", None, 1801, 24.0, 720, 1280),
    ("Drive forward", "ego_view", 3600, 7.5, 960, 960),
    ("", "ego_view", 2, 24.0, 544, 736),
    ("Fold the cloth", "ego_view", 37, 24.0, 300, 1000),
]

SOURCE_SIZES = [(64, 64), (480, 640), (640, 480), (720, 1280), (1280, 720), (256, 320), (100, 1000), (1000, 100)]
SOURCE_SIZES += [(183, 256), (333, 256), (544, 736), (7, 9)]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return build_tiny_tokenizer(tmp_path_factory.mktemp("tok"))


def test_constants_match_reference():
    assert SYSTEM_PROMPT_VIDEO == ref._SYSTEM_PROMPT_VIDEO
    assert SYSTEM_PROMPT_IMAGE == ref._SYSTEM_PROMPT_IMAGE
    assert dict(VIEW_POINT_FRAMING) == ref._ACTION_VIEWPOINT_TEMPLATES


@pytest.mark.parametrize("instruction, view_point, num_frames, fps, height, width", CAPTION_CASES)
def test_action_caption_is_byte_identical_to_reference(instruction, view_point, num_frames, fps, height, width):
    kwargs = dict(view_point=view_point, num_frames=num_frames, fps=fps, height=height, width=width)
    ours = action_caption(instruction, **kwargs)
    assert ours == ref.Cosmos3OmniPipeline._build_action_json_prompt(instruction, **kwargs)
    caption = json.loads(ours)
    assert caption["resolution"] == {"H": height, "W": width}
    assert ("cinematography" in caption) == (view_point in VIEW_POINT_FRAMING)


def test_action_caption_long_duration_and_period():
    text = action_caption("Drive forward", view_point=None, num_frames=1801, fps=24.0, height=720, width=1280)
    caption = json.loads(text)
    assert caption["actions"] == [{"time": "0:00-1:15", "description": "Drive forward."}]
    assert caption["duration"] == "75s" and caption["aspect_ratio"] == "16,9"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_frames=0), "num_frames"),
        (dict(fps=0.0), "fps"),
        (dict(fps=float("nan")), "fps"),
        (dict(height=-1), "height"),
        (dict(width=2.5), "width"),
    ],
)
def test_action_caption_rejects_bad_arguments(kwargs, match):
    args = dict(view_point="ego_view", num_frames=17, fps=24.0, height=256, width=256) | kwargs
    with pytest.raises(ValueError, match=match):
        action_caption("Push the T block", **args)


def test_tiny_tokenizer_is_real_deterministic_and_reloadable(tokenizer, tmp_path):
    again = build_tiny_tokenizer(tmp_path / "a")
    build_tiny_tokenizer(tmp_path / "ckpt" / "text_tokenizer")
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "ckpt" / "text_tokenizer" / name).read_bytes()
    assert again.get_vocab() == tokenizer.get_vocab()
    assert len(tokenizer) < 1024
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    special_ids = tokenizer.convert_tokens_to_ids(list(TINY_SPECIAL_TOKENS))
    assert special_ids == list(range(len(tokenizer) - len(TINY_SPECIAL_TOKENS), len(tokenizer)))
    text = 'Pick up the red cube. {"fps": 24.0}'
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids) == text and len(ids) < len(text) / 2  # trained merges, byte-level round trip
    assert load_tokenizer(str(tmp_path / "a"), subfolder=None).encode(text) == tokenizer.encode(text)
    assert load_tokenizer(str(tmp_path / "ckpt")).get_vocab() == tokenizer.get_vocab()


def test_tiny_chat_template_renders_chatml(tokenizer):
    conversation = [{"role": "system", "content": "S"}, {"role": "user", "content": [{"type": "text", "text": "U"}]}]
    rendered = tokenizer.apply_chat_template(
        conversation, tokenize=False, add_generation_prompt=True, add_vision_id=True
    )
    assert rendered == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"
    assert not tokenizer.apply_chat_template(conversation, tokenize=False).endswith("assistant\n")


def _reference_tokenize(tokenizer, prompt, negative_prompt, *, use_system_prompt, **kwargs):
    """Run the reference ``tokenize_prompt`` (action mode) on a stand-in pipeline holding only what it reads."""
    pipe = SimpleNamespace(
        config=SimpleNamespace(default_use_system_prompt=True),
        text_tokenizer=tokenizer,
        llm_special_tokens={
            "start_of_generation": tokenizer.convert_tokens_to_ids("<|vision_start|>"),
            "eos_token_id": tokenizer.eos_token_id,
        },
        _build_action_json_prompt=ref.Cosmos3OmniPipeline._build_action_json_prompt,
        image_resolution_template="",
        video_resolution_template="",
        inverse_image_resolution_template="",
        inverse_video_resolution_template="",
    )
    return ref.Cosmos3OmniPipeline.tokenize_prompt(
        pipe, prompt, negative_prompt, use_system_prompt=use_system_prompt, action_mode="policy", **kwargs
    )


@pytest.mark.parametrize("use_system_prompt", [True, False])
@pytest.mark.parametrize("negative_prompt", [None, "blurry, static video"])
def test_prompt_ids_equal_reference_tokenize_prompt(tokenizer, use_system_prompt, negative_prompt):
    encoder = PromptEncoder(tokenizer, use_system_prompt=use_system_prompt)
    for instruction, view_point, num_frames, fps, height, width in CAPTION_CASES:
        kwargs = dict(num_frames=num_frames, fps=fps, height=height, width=width)
        cond, uncond = _reference_tokenize(
            tokenizer,
            instruction,
            negative_prompt,
            use_system_prompt=use_system_prompt,
            action_view_point=view_point,
            **kwargs,
        )
        assert encoder.action_prompt_ids(instruction, view_point=view_point, **kwargs) == cond
        if negative_prompt is None:
            assert encoder.negative_prompt_ids(image=num_frames == 1) == uncond
        else:
            assert encoder.negative_prompt_ids(negative_prompt, image=num_frames == 1) == uncond


def test_prompt_ids_equal_manual_chat_template(tokenizer):
    encoder = PromptEncoder(tokenizer)
    suffix = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|vision_start|>")]
    kwargs = dict(view_point="ego_view", num_frames=17, fps=10, height=256, width=256)
    ids = encoder.action_prompt_ids("Push the T block", **kwargs)
    caption = action_caption("Push the T block", **kwargs)
    manual = tokenizer.apply_chat_template(
        [{"role": "system", "content": SYSTEM_PROMPT_VIDEO}, {"role": "user", "content": caption}],
        tokenize=True,
        add_generation_prompt=True,
        add_vision_id=False,
        return_dict=True,
    ).input_ids
    assert ids == manual + suffix
    assert ids[-2:] == suffix
    assert encoder.negative_prompt_ids() == encoder.prompt_ids("") == encoder.negative_prompt_ids("")
    image_ids = PromptEncoder(tokenizer, use_system_prompt=False).prompt_ids("A cup.", image=True)
    assert (
        image_ids
        == tokenizer.apply_chat_template(
            [{"role": "user", "content": "A cup."}], tokenize=True, add_generation_prompt=True, return_dict=True
        ).input_ids
        + suffix
    )


class _StubTokenizer:
    chat_template = "{{ messages }}"
    eos_token_id = 1

    def __init__(self, **overrides):
        self.__dict__.update(overrides)

    def get_vocab(self):
        return {"<|vision_start|>": 2}


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(chat_template=None), "chat template"),
        (dict(eos_token_id=None), "eos"),
        (dict(get_vocab=lambda: {}), "vision_start"),
    ],
)
def test_prompt_encoder_rejects_incomplete_tokenizers(overrides, match):
    with pytest.raises(ValueError, match=match):
        PromptEncoder(_StubTokenizer(**overrides))


def test_check_length():
    ids = list(range(10))
    assert check_length(ids, 10) is ids
    with pytest.raises(ValueError, match=r"negative prompt is 10 tokens long.* 9 tokens"):
        check_length(ids, 9, name="negative prompt")
