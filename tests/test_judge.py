"""The Reasoner success judge: equal to plain transformers, sharing the generator's storage, deterministic, batched."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from cosmos3_world.engine.world import WorldModel
from cosmos3_world.judge import ReasonerJudge, as_frames, sample_indices, unique_bytes, vision_tensors
from cosmos3_world.judge.loading import check_compatible, generator_name
from cosmos3_world.testing.tiny import build_tiny_bundle, demo_image

TASKS = ["Push the T block to the target", "Pick up the cup"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny ops are dominated by thread hand-offs (50x slower with 2 threads on a busy machine): run on one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_tiny_bundle(tmp_path_factory.mktemp("reasoner"), reasoner=True)


@pytest.fixture(scope="module")
def world_model(bundle):
    return WorldModel.from_pretrained(bundle)


@pytest.fixture(scope="module")
def shared(bundle, world_model):
    return ReasonerJudge.from_pretrained(bundle, world_model)


@pytest.fixture(scope="module")
def alone(bundle):
    return ReasonerJudge.from_pretrained(bundle)


@pytest.fixture(scope="module")
def plain(bundle):
    """The oracle: the Reasoner exactly as transformers loads it."""
    from transformers import Cosmos3OmniForConditionalGeneration

    model, info = Cosmos3OmniForConditionalGeneration.from_pretrained(str(bundle), output_loading_info=True)
    return model.eval(), info


def episode(n: int = 10, seed: int = 0, size: int = 64) -> np.ndarray:
    return np.stack([demo_image(size, size, seed=seed + i) for i in range(n)])  # [T, H, W, 3] uint8


def reference_logits(judge: ReasonerJudge, model, episodes, tasks) -> torch.Tensor:
    """Yes/no logits of `model` on the judge's inputs, from the full logits (no logits_to_keep)."""
    clips = [judge.sample(e) for e in episodes]
    texts = [judge.question.format(num_frames=len(c), instruction=t) for c, t in zip(clips, tasks)]
    with torch.no_grad():
        logits = model(**judge.processor(clips, texts, torch.device("cpu"))).logits[:, -1].float()
    return torch.stack(
        [torch.logsumexp(logits[:, judge.yes_ids], -1), torch.logsumexp(logits[:, judge.no_ids], -1)], dim=-1
    )


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


# ---------------------------------------------------------------------------------------------- bundle


def test_transformers_loads_the_tiny_bundle_with_no_missing_or_unexpected_keys(plain):
    _, info = plain
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    assert not info["error_msgs"]


def test_reasoner_bundles_keep_world_model_loading(world_model, shared):
    assert world_model.generator.config.hidden_size == shared.model.config.text_config.hidden_size


# ---------------------------------------------------------------------------------------------- parity


@pytest.mark.parametrize("which", ["shared", "alone"])
def test_yes_no_logits_equal_plain_transformers(which, request, plain):
    judge = request.getfixturevalue(which)
    episodes = [episode(10), episode(3, seed=5)]
    ours = judge.yes_no_logits(episodes, TASKS)
    ref = reference_logits(judge, plain[0], episodes, TASKS)
    assert ours.shape == (2, 2)
    assert rel_err(ours, ref) <= 1e-5


def test_shared_parameters_are_the_generators_storage(shared, world_model):
    gen = dict(world_model.generator.named_parameters())
    lm = [(n, p) for n, p in shared.model.named_parameters() if not n.startswith("model.visual.")]
    assert len(lm) == 3 + 11 * world_model.generator.config.num_hidden_layers  # embed, norm, lm_head + per layer
    for name, p in lm:
        ours = gen[generator_name(name)]
        assert p is ours and p.data_ptr() == ours.data_ptr(), name
    assert shared.model.lm_head.weight.data_ptr() == world_model.generator.lm_head.weight.data_ptr()


def test_building_and_running_a_shared_judge_leaves_the_generator_untouched(bundle, world_model):
    gen = world_model.generator
    before = {n: (p, p.detach().clone()) for n, p in gen.named_parameters()}
    judge = ReasonerJudge.from_pretrained(bundle, world_model)
    judge.score(episode(2), TASKS[0])
    after = dict(gen.named_parameters())
    assert after.keys() == before.keys()
    assert all(after[n] is p and torch.equal(p, value) for n, (p, value) in before.items())


def test_extra_memory_is_the_vision_encoders(shared, world_model):
    gen = world_model.generator
    before = unique_bytes([*gen.parameters(), *gen.buffers()])
    after = unique_bytes([*gen.parameters(), *gen.buffers(), *shared.model.parameters(), *shared.model.buffers()])
    vit_params = unique_bytes(shared.model.model.visual.parameters())
    extra_params = unique_bytes([*gen.parameters(), *shared.model.parameters()]) - unique_bytes(gen.parameters())
    assert extra_params == vit_params > 0
    rope = unique_bytes(shared.model.model.language_model.rotary_emb.buffers())  # the LM's RoPE tables, < 1 KB
    assert after - before == unique_bytes(vision_tensors(shared.model)) + rope
    assert rope < 1024


def test_shared_judge_sees_later_weight_updates(shared, world_model):
    frames = episode(4)
    before = shared.yes_no_logits([frames], TASKS[:1])
    weight = world_model.generator.norm.weight
    with torch.no_grad():
        weight.mul_(1.5)
    try:
        assert not torch.allclose(shared.yes_no_logits([frames], TASKS[:1]), before)
    finally:
        with torch.no_grad():
            weight.div_(1.5)
    torch.testing.assert_close(shared.yes_no_logits([frames], TASKS[:1]), before)


def test_bf16_generator_shares_in_bf16(bundle):
    wm = WorldModel.from_pretrained(bundle, torch_dtype=torch.bfloat16)
    judge = ReasonerJudge.from_pretrained(bundle, wm)
    assert judge.model.dtype == torch.bfloat16 and judge.model.model.visual.dtype == torch.bfloat16
    assert judge.model.model.language_model.embed_tokens.weight is wm.generator.embed_tokens.weight
    assert 0.0 <= judge.score(episode(4), TASKS[0]) <= 1.0
    with pytest.raises(ValueError, match="runs in the generator's dtype"):
        ReasonerJudge.from_pretrained(bundle, wm, torch_dtype=torch.float32)
    with pytest.raises(ValueError, match="generator's device"):
        ReasonerJudge.from_pretrained(bundle, wm, device="meta")


def test_a_generator_of_another_shape_is_refused(shared, world_model):
    gen = world_model.generator
    other = SimpleNamespace(config=dataclasses.replace(gen.config, num_hidden_layers=3))
    with pytest.raises(ValueError, match="num_hidden_layers: Reasoner 4 vs generator 3"):
        check_compatible(shared.model.config, other)


# ---------------------------------------------------------------------------------------------- scores


def test_scores_are_deterministic_probabilities_and_batched_equals_single(shared):
    episodes = [episode(10), episode(2, seed=5)]
    tasks = TASKS
    single = [shared.score(e, t) for e, t in zip(episodes, tasks)]
    assert all(isinstance(s, float) and 0.0 <= s <= 1.0 for s in single)
    assert single == [shared.score(e, t) for e, t in zip(episodes, tasks)]
    np.testing.assert_allclose(shared.score_batch(episodes, tasks), single, rtol=0, atol=1e-6)
    assert shared.score_batch([], []) == []


def test_processor_expands_image_tokens_and_marks_them(shared):
    frames = shared.sample(episode(10))
    inputs = shared.processor([frames, frames[:2]], ["a", "b c d"], torch.device("cpu"))
    per_frame = int(inputs["image_grid_thw"][0].prod()) // shared.processor.merge_size**2
    assert inputs["image_grid_thw"].shape == (len(frames) + 2, 3) and per_frame == 16  # 64x64, 8px patches, 2x2 merge
    image = inputs["input_ids"] == shared.processor.image_token_id
    assert image.sum(1).tolist() == [per_frame * len(frames), per_frame * 2]
    assert torch.equal(inputs["mm_token_type_ids"].bool(), image)
    assert inputs["attention_mask"][1, 0] == 0 and inputs["attention_mask"][:, -1].all()  # left-padded
    assert shared.processor.tokens_per_frame(64, 64) == per_frame
    # mm_token_type_ids give image tokens 2-D (h, w) positions; text tokens have t == h == w
    pos, _ = shared.model.model.get_rope_index(
        inputs["input_ids"],
        inputs["mm_token_type_ids"],
        inputs["image_grid_thw"],
        attention_mask=inputs["attention_mask"],
    )  # [3, B, L]
    row = pos[:, 0, image[0]]
    assert (row[1] != row[2]).any() and torch.equal(pos[0, 0, ~image[0]], pos[1, 0, ~image[0]])


def test_max_pixels_bounds_the_frame_size(shared):
    small = ReasonerJudge(shared.model, shared.processor, max_pixels=32 * 32)
    inputs = small.processor([small.sample(episode(2))], ["a"], torch.device("cpu"), small.max_pixels)
    assert inputs["image_grid_thw"][:, 1:].tolist() == [[4, 4], [4, 4]]  # 32x32 pixels: 4x4 patches, 2x2 tokens
    assert small.processor.tokens_per_frame(64, 64, 32 * 32) == 4
    assert 0.0 <= small.score(episode(2), TASKS[0]) <= 1.0
    with pytest.raises(ValueError, match="max_pixels"):
        ReasonerJudge(shared.model, shared.processor, max_pixels=10)


def test_frame_sampling():
    assert sample_indices(10, 8, "uniform") == [0, 1, 3, 4, 5, 6, 8, 9]
    assert sample_indices(3, 8, "uniform") == [0, 1, 2]
    assert sample_indices(1, 8, "uniform") == [0]
    assert sample_indices(10, 3, "last") == [7, 8, 9]
    assert sample_indices(10, 3, 4) == [1, 5, 9]
    assert sample_indices(10, None, "uniform") == list(range(10))
    with pytest.raises(ValueError, match="spacing"):
        sample_indices(10, 3, "random")


def test_ask_returns_text(shared):
    answer = shared.ask(episode(4), "What did the robot do?", max_new_tokens=4)
    assert isinstance(answer, str)
    with pytest.raises(ValueError, match="question"):
        shared.ask(episode(4), "  ")


# ---------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "frames, match",
    [
        (episode(3).astype(np.float32) / 255, "must be uint8"),
        (np.zeros((3, 64, 64), np.uint8), r"\[H, W, 3\] RGB"),
        (np.zeros((64, 64), np.uint8), "must be"),
        ([], "empty"),
        (np.zeros((0, 64, 64, 3), np.uint8), "empty"),
        ("frames.mp4", "must be an array"),
        (np.zeros((2, 1, 300, 3), np.uint8), "aspect ratio"),
    ],
)
def test_bad_frames_get_clear_errors(shared, frames, match):
    with pytest.raises(ValueError, match=match):
        shared.score(frames, TASKS[0])


def test_frames_in_every_accepted_form_agree(shared):
    frames = episode(3)
    assert len(as_frames(frames[0])) == 1
    a = shared.score(frames, TASKS[0])
    assert shared.score(list(frames), TASKS[0]) == a
    assert shared.score(torch.from_numpy(frames), TASKS[0]) == a


@pytest.mark.parametrize("task", ["", "   ", None, 3])
def test_empty_instructions_get_clear_errors(shared, task):
    with pytest.raises(ValueError, match="non-empty string"):
        shared.score(episode(2), task)


def test_too_many_frames_get_clear_errors(shared):
    every_frame = ReasonerJudge(shared.model, shared.processor, num_frames=None, max_frames=4)
    assert 0.0 <= every_frame.score(episode(4), TASKS[0]) <= 1.0
    with pytest.raises(ValueError, match="too many frames"):
        every_frame.score(episode(5), TASKS[0])
    short = ReasonerJudge(shared.model, shared.processor, num_frames=8, max_tokens=64)
    with pytest.raises(ValueError, match="too many frames: the prompt takes"):
        short.score(episode(8), TASKS[0])
    with pytest.raises(ValueError, match="more than max_frames"):
        ReasonerJudge(shared.model, shared.processor, num_frames=40)
    with pytest.raises(ValueError, match="one instruction per episode"):
        shared.score_batch([episode(2)], TASKS)


# ---------------------------------------------------------------------------------------------- env hook


def test_plugs_into_the_env_success_hook(shared):
    from cosmos3_world.envs.success import Judge

    episodes = [episode(3), episode(2, seed=4)]
    scores = shared.score_batch(episodes, TASKS)
    scored = Judge(ReasonerJudge(shared.model, shared.processor, threshold=0.25))
    assert scored.at_end and scored.episode_frames and scored.threshold == 0.25 and scored.batch is not None
    verdicts = scored.judge(episodes, TASKS)  # the P(yes) scores kept as rewards, thresholded by the env
    np.testing.assert_allclose([v.reward for v in verdicts], scores, atol=1e-6)
    assert [v.success for v in verdicts] == [s >= 0.25 for s in scores]
    assert shared(episodes[0], TASKS[0]) == pytest.approx(scores[0], abs=1e-6)
    binary = ReasonerJudge(shared.model, shared.processor, threshold=0.5, at_end=False, every=2, reward="success")
    hook = Judge(binary)
    assert hook.every == 2 and not hook.at_end and hook.due(2, last=False) and not hook.due(1, last=False)
    assert binary(episodes[1], TASKS[1]) is (scores[1] >= 0.5)
    assert [v.success for v in hook.judge(episodes, TASKS)] == [s >= 0.5 for s in scores]
