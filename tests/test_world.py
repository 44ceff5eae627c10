"""The world engine: parity with diffusers' pipeline, determinism, batching, the prefix cache, bad input."""

import numpy as np
import pytest
import torch
from PIL import Image

from cosmos3_world.engine.sampler import SamplerConfig
from cosmos3_world.engine.world import WorldModel
from cosmos3_world.testing.reference import rel
from cosmos3_world.testing.tiny import demo_image

STEPS = SamplerConfig(num_steps=3, guidance_scale=3.0)


@pytest.fixture(scope="module")
def reference_pipeline(wan_bundle):
    from cosmos3_world.testing.reference import reference_pipeline

    return reference_pipeline(wan_bundle)


@pytest.mark.parametrize("mode", ["forward_dynamics", "policy"])
def test_one_chunk_matches_the_reference_pipeline(mode, wan_bundle, reference_pipeline):
    from diffusers.pipelines.cosmos.pipeline_cosmos3_omni import CosmosActionCondition

    img = demo_image(256, 256, seed=4)
    actions = torch.randn(8, 10, generator=torch.Generator().manual_seed(0))
    condition = CosmosActionCondition(
        mode=mode,
        chunk_size=8,
        domain_name="droid_lerobot",
        resolution_tier=256,
        image=Image.fromarray(img),
        raw_actions=actions if mode == "forward_dynamics" else None,
        view_point="wrist_view",
    )
    expected = reference_pipeline(
        "put the cup on the plate",
        action=condition,
        num_inference_steps=3,
        guidance_scale=3.0,
        fps=15.0,
        generator=torch.Generator().manual_seed(5),
        output_type="latent",
    )
    wm = WorldModel.from_pretrained(wan_bundle, sampler=STEPS)
    world = wm.reset(
        img,
        "put the cup on the plate",
        "droid_lerobot",
        seed=5,
        chunk_size=8,
        fps=15.0,
        view_point="wrist_view",
        tier=256,
    )
    result = world.step(actions) if mode == "forward_dynamics" else world.predict()
    assert result.latents.shape == expected.video[0].shape == (48, 3, 16, 16)
    assert rel(result.latents, expected.video[0]) <= 1e-4
    assert result.frames.shape == (8, 256, 256, 3) and result.frames.dtype == np.uint8
    if mode == "policy":
        assert result.actions.shape == (8, 10)
        assert rel(result.actions, expected.action[0]) <= 1e-4


@pytest.mark.parametrize("mode", ["forward_dynamics", "policy"])
@pytest.mark.parametrize("size", [(480, 640), (200, 330)])
def test_frames_off_the_canvas_are_conditioned_as_the_reference_does(mode, size, wan_bundle, reference_pipeline):
    """480x640 is downscaled into tier 256's 256x320 canvas and reflect-padded; 200x330 is snapped to 192x320.
    Both are captioned with the canvas, encoded padded, and cropped to the content's latents."""
    from diffusers.pipelines.cosmos.pipeline_cosmos3_omni import CosmosActionCondition

    img = demo_image(*size, seed=2)
    actions = torch.randn(4, 10, generator=torch.Generator().manual_seed(1))
    condition = CosmosActionCondition(
        mode=mode, chunk_size=4, domain_name="droid_lerobot", resolution_tier=256,
        image=torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255.0,
        raw_actions=actions if mode == "forward_dynamics" else None, view_point="wrist_view",
    )  # fmt: skip
    expected = reference_pipeline(
        "fold the towel", action=condition, num_inference_steps=2, guidance_scale=3.0, fps=15.0,
        generator=torch.Generator().manual_seed(2), output_type="latent",
    )  # fmt: skip
    wm = WorldModel.from_pretrained(wan_bundle, sampler=SamplerConfig(num_steps=2, guidance_scale=3.0))
    world = wm.reset(img, "fold the towel", "droid_lerobot", seed=2, chunk_size=4, fps=15.0, view_point="wrist_view",
                     tier=256)  # fmt: skip
    content = {(480, 640): (240, 320), (200, 330): (192, 320)}[size]
    assert (world.canvas.height, world.canvas.width) == {(480, 640): (256, 320), (200, 330): (192, 320)}[size]
    assert world.frame_shape == (*content, 3)
    result = world.step(actions) if mode == "forward_dynamics" else world.predict()
    assert result.latents.shape == expected.video[0].shape == (48, 2, content[0] // 16, content[1] // 16)
    assert rel(result.latents, expected.video[0]) <= 1e-4
    assert result.frames.shape == (4, *content, 3)
    if mode == "policy":
        assert rel(result.actions, expected.action[0]) <= 1e-4
    assert world.step(actions).frames.shape == (4, *content, 3)  # later chunks stay at the content size


@pytest.fixture(scope="module")
def wm(tiny_bundle):
    return WorldModel.from_pretrained(tiny_bundle, sampler=SamplerConfig(num_steps=3, guidance_scale=2.0))


def rollout(wm, seed, chunks=5, instruction="stack the blocks", embodiment="bridge_orig_lerobot", **kw):
    world = wm.reset(demo_image(seed=1), instruction, embodiment, seed=seed, chunk_size=4, **kw)
    rng = np.random.default_rng(seed)
    dim = world.embodiment.action_dim
    return world, [world.step(rng.uniform(-1, 1, (4, dim)).astype(np.float32)) for _ in range(chunks)]


def test_five_chunk_rollout_is_deterministic_for_a_seed(wm):
    _, a = rollout(wm, seed=3)
    _, b = rollout(wm, seed=3)
    _, c = rollout(wm, seed=4)
    assert all(np.array_equal(x.frames, y.frames) for x, y in zip(a, b))
    assert not np.array_equal(a[-1].frames, c[-1].frames)
    assert all(r.frames.shape == (4, 64, 64, 3) for r in a)


def test_fork_imagines_ahead_without_touching_the_world(wm):
    world, _ = rollout(wm, seed=8, chunks=1)
    actions = np.full((4, world.embodiment.action_dim), 0.3, np.float32)
    before, chunks = [f.clone() for f in world.frames], world.num_chunks
    fork = world.fork()
    ahead = fork.step(actions)
    assert fork.num_chunks == chunks + 1 and world.num_chunks == chunks
    assert len(world.frames) == len(before) and all(torch.equal(a, b) for a, b in zip(world.frames, before))
    assert fork.model is world.model
    np.testing.assert_array_equal(world.step(actions).frames, ahead.frames)  # same noise stream, same chunk


def test_with_sampler_is_a_view_sharing_everything_but_the_sampler(wm):
    assert wm.with_sampler(None) is wm and wm.with_sampler(wm.sampler.config) is wm
    view = wm.with_sampler(SamplerConfig(num_steps=1, guidance_scale=1.0))
    assert view.generator is wm.generator and view.prefix_cache is wm.prefix_cache and view.codec is wm.codec
    assert view.sampler.config.num_steps == 1 and wm.sampler.config.num_steps == 3


def test_each_chunk_starts_from_the_previous_chunks_last_frame(wm):
    world, results = rollout(wm, seed=6, chunks=2)
    first_latent_of_chunk2 = results[1].latents[:, 0]
    reencoded = wm.codec.encode(torch.from_numpy(results[0].frames[-1]).permute(2, 0, 1)[:, None][None] / 127.5 - 1)
    assert rel(first_latent_of_chunk2, reencoded[0, :, 0]) < 0.05  # clean frame, drifted only by the solver
    assert np.array_equal(world.last_frame, results[1].frames[-1])


def test_prefix_is_encoded_once_per_instruction(wm):
    stats = wm.prefix_cache.stats
    before = stats.tokens_encoded
    rollout(wm, seed=0, chunks=5, instruction="open the drawer slowly")
    encoded_first_episode = stats.tokens_encoded - before
    assert encoded_first_episode > 0
    rollout(wm, seed=1, chunks=5, instruction="open the drawer slowly")  # a later episode, same instruction
    assert stats.tokens_encoded - before == encoded_first_episode
    misses = stats.misses
    rollout(wm, seed=1, chunks=1, instruction="close the drawer")  # shares the system prompt: partial hit
    assert stats.misses == misses and stats.partial_hits > 0


def test_batched_worlds_equal_single_worlds(wm):
    setups = [  # instruction, embodiment, seed, image seed, chunk size
        ("stack the blocks", "bridge_orig_lerobot", 1, 1, 4),
        ("wipe the table", "fractal", 2, 2, 4),
        ("push the T into the goal", "pusht", 3, 3, 2),
    ]

    def make():
        return [wm.reset(demo_image(seed=s_img), ins, emb, seed=s, chunk_size=n) for ins, emb, s, s_img, n in setups]

    rng = np.random.default_rng(0)
    acts = [
        [rng.uniform(-1, 1, (n, wm.embodiments.get(emb).action_dim)) for _, emb, _, _, n in setups] for _ in range(2)
    ]
    batch = make()
    batched = [wm.step(batch, a) for a in acts]
    singles = make()
    for i, w in enumerate(singles):
        for c, a in enumerate(acts):
            alone = w.step(a[i])
            assert rel(batched[c][i].latents, alone.latents) <= 1e-5
            assert np.abs(batched[c][i].frames.astype(int) - alone.frames.astype(int)).max() <= 1


def test_one_world_resets_while_the_others_go_on(wm):
    a = wm.reset(demo_image(seed=1), "stack", "bridge_orig_lerobot", seed=1, chunk_size=4)
    b = wm.reset(demo_image(seed=2), "wipe", "bridge_orig_lerobot", seed=2, chunk_size=4)
    ref = wm.reset(demo_image(seed=1), "stack", "bridge_orig_lerobot", seed=1, chunk_size=4)
    act = np.zeros((4, 10), np.float32)
    wm.step([a, b], [act, act])
    ref.step(act)
    wm.reset(demo_image(seed=9), "new task", "bridge_orig_lerobot", seed=9, chunk_size=4, world=b)
    assert b.num_chunks == 0 and b.instruction == "new task"
    out = wm.step([a, b], [act, act])
    assert a.num_chunks == 2
    assert rel(out[0].latents, ref.step(act).latents) <= 1e-5


def test_policy_mode_returns_raw_actions_and_advances(wm):
    world = wm.reset(demo_image(), "pick", "umi", seed=0, chunk_size=4)
    r = world.predict()
    assert r.actions.shape == (4, 10) and np.isfinite(r.actions).all()
    assert r.frames.shape == (4, 64, 64, 3) and world.num_chunks == 1


def test_inverse_dynamics_shapes_and_determinism(wm):
    video = np.stack([demo_image(seed=s) for s in range(5)])
    a = wm.infer_actions(video, "move", "fractal", seed=2)
    b = wm.infer_actions(video, "move", "fractal", seed=2)
    assert a.shape == (4, 10) and np.array_equal(a, b)


def test_history_conditions_on_more_frames_once_they_exist(wm):
    world = wm.reset(demo_image(), "stack", "bridge_orig_lerobot", seed=0, chunk_size=4, history=3)
    act = np.zeros((4, 10), np.float32)
    assert world.step(act).latents.shape[1] == 1 + 4  # only the start frame exists
    assert world.step(act).latents.shape[1] == 3 + 4  # two more frames of context, and their actions
    assert world.step(act).latents.shape[1] == 3 + 4


def test_vae_geometry_pairs_n_actions_with_n_plus_one_frames(wan_bundle):
    wm = WorldModel.from_pretrained(wan_bundle, sampler=SamplerConfig(num_steps=1, guidance_scale=1.0))
    world = wm.reset(demo_image(32, 48), "go", "fractal", seed=0, chunk_size=4)
    r = world.step(np.zeros((4, 10)))
    assert r.latents.shape == (48, 2, 2, 3) and r.frames.shape == (4, 32, 48, 3)
    with pytest.raises(ValueError, match="chunk_size must be a positive multiple of the codec's temporal factor 4"):
        wm.reset(demo_image(32, 48), "go", "fractal", chunk_size=6)


BAD_STEPS = [
    (np.zeros((4, 7)), r"actions\[0\]: actions must have shape \[4, 10\]"),
    (np.zeros((3, 10)), r"actions must have shape \[4, 10\]"),
    (np.full((4, 10), np.nan), "finite"),
    (np.full((4, 10), np.inf), "finite"),
    (np.zeros((4, 10), dtype=bool), "dtype"),
    (np.array([["a"] * 10] * 4), "dtype"),
]


@pytest.mark.parametrize("bad, message", BAD_STEPS)
def test_rejected_actions_leave_the_world_usable(wm, bad, message):
    world = wm.reset(demo_image(), "stack", "bridge_orig_lerobot", seed=8, chunk_size=4)
    twin = wm.reset(demo_image(), "stack", "bridge_orig_lerobot", seed=8, chunk_size=4)
    snapshot = bad.copy()
    with pytest.raises(ValueError, match=message):
        world.step(bad)
    assert np.array_equal(bad, snapshot, equal_nan=bad.dtype.kind == "f") and world.num_chunks == 0
    act = np.full((4, 10), 0.3, np.float32)
    assert np.array_equal(world.step(act).frames, twin.step(act).frames)  # same random stream as an untouched twin


def test_bad_resets_give_clear_errors(wm):
    img = demo_image()
    cases = [
        (dict(image=img[..., :2]), "image must be"),
        (dict(image=img.astype(np.int32)), "uint8 or float"),
        (dict(image=img / 255.0 * 2), r"floats must lie in \[0, 1\]"),
        (dict(image=np.full((64, 64, 3), np.nan)), "NaN"),
        (dict(image=img[:62]), "multiples of the codec's spatial factor 4"),
        (dict(image=img[:2, :2], tier=256), "too small for a codec with spatial factor 4"),
        (dict(image=img, tier=512), r"tier must be one of \[256, 480, 704, 720\] or None"),
        (dict(image=img, seed="abc"), "seed must be an int"),
        (dict(image=img, seed=-1), "seed must be an int"),
        (dict(image=img, fps="fast"), "fps must be a positive number"),
        (dict(image=img, view_point="top"), "view_point must be one of"),
        (dict(image=img, instruction=3), "instruction must be a str"),
        (dict(image=img, embodiment="not_a_robot"), "not_a_robot"),
        (dict(image=img, embodiment="libero"), "register"),
        (dict(image=img, chunk_size=0), "chunk_size"),
        (dict(image=img, history=0), "history"),
        (dict(), "exactly one of image"),
    ]
    for kwargs, message in cases:
        kwargs.setdefault("embodiment", "bridge_orig_lerobot")
        with pytest.raises((ValueError, KeyError), match=message):
            wm.reset(**{"instruction": "x", "seed": 0, **kwargs})


def test_a_failed_in_place_reset_leaves_the_world_unchanged(tiny_bundle):
    wm = WorldModel.from_pretrained(tiny_bundle, max_prompt_tokens=200, sampler=STEPS)
    world = wm.reset(demo_image(seed=1), "stack", "bridge_orig_lerobot", seed=1, chunk_size=4)
    twin = wm.reset(demo_image(seed=1), "stack", "bridge_orig_lerobot", seed=1, chunk_size=4)
    act = np.full((4, 10), 0.2, np.float32)
    world.step(act), twin.step(act)
    with pytest.raises(ValueError, match="instruction prompt is"):
        wm.reset(demo_image(seed=2), "far too long " * 60, "bridge_orig_lerobot", seed=2, world=world)
    assert world.instruction == "stack" and world.num_chunks == 1
    assert np.array_equal(world.step(act).frames, twin.step(act).frames)


def test_the_same_world_twice_in_one_step_is_rejected(wm):
    world = wm.reset(demo_image(), "x", "bridge_orig_lerobot", seed=0, chunk_size=4)
    with pytest.raises(ValueError, match="same World more than once"):
        wm.step([world, world], [np.zeros((4, 10))] * 2)
    assert world.num_chunks == 0


def test_dtype_names_are_checked(tiny_bundle):
    with pytest.raises(ValueError, match=r"torch_dtype must be a floating torch dtype or one of .*'bf16'"):
        WorldModel.from_pretrained(tiny_bundle, torch_dtype="bf16")
    with pytest.raises(ValueError, match="codec_dtype must be"):
        WorldModel.from_pretrained(tiny_bundle, codec_dtype=torch.int8)


def test_prompt_longer_than_the_model_accepts(tiny_bundle):
    wm = WorldModel.from_pretrained(tiny_bundle, max_prompt_tokens=60)
    with pytest.raises(ValueError, match=r"instruction prompt is \d+ tokens long, more than the maximum of 60"):
        wm.reset(demo_image(), "a very long instruction " * 20, "bridge_orig_lerobot", seed=0)


def test_worlds_of_another_model_are_rejected(wm, tiny_bundle):
    other = WorldModel.from_pretrained(tiny_bundle)
    world = other.reset(demo_image(), "x", "bridge_orig_lerobot", seed=0, chunk_size=4)
    with pytest.raises(ValueError, match="created by this WorldModel"):
        wm.step([world], [np.zeros((4, 10))])


def test_bundle_loads_from_the_hf_cache_offline(tiny_bundle, tmp_path, monkeypatch):
    import shutil

    repo = tmp_path / "hub" / "models--acme--cosmos3-tiny"
    commit = "89abcdef0123456789abcdef0123456789abcdef"
    shutil.copytree(tiny_bundle, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    wm = WorldModel.from_pretrained(
        "acme/cosmos3-tiny", cache_dir=tmp_path / "hub", torch_dtype="bfloat16", sampler=SamplerConfig(num_steps=1)
    )
    assert wm.generator.dtype == torch.bfloat16 and wm.codec.dtype == torch.bfloat16
    world = wm.reset(demo_image(), "x", "fractal", seed=0, chunk_size=2)
    assert world.step(np.zeros((2, 10))).frames.shape == (2, 64, 64, 3)
