"""The action-mode canvas against the reference pipeline's own functions, called on the same frames."""

import json
import random
import warnings
from types import SimpleNamespace

import pytest
import torch
from diffusers.pipelines.cosmos.pipeline_cosmos3_omni import _ACTION_RESOLUTION_BINS, Cosmos3OmniPipeline
from diffusers.video_processor import VideoProcessor

from cosmos3_world.engine.canvas import CANVAS_BINS, Canvas, content_frames, crop_latents, plan_canvas, to_canvas

TIERS = (256, 480, 704, 720)
# (H, W): DROID, off-grid, square, 720p, small, and three already on a canvas.
SIZES = ((480, 640), (200, 330), (256, 256), (720, 1280), (100, 100), (544, 736), (192, 320), (960, 960))


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: these tensors are small, and on a busy machine thread hand-offs cost ~100x the work."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _pixels(height: int, width: int, frames: int = 2, seed: int = 0) -> torch.Tensor:
    """Random frames [3, T, H, W] in [-1, 1] (with a -1, so the reference does not renormalise them)."""
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.rand(3, frames, height, width, generator=generator) * 2 - 1
    pixels[0, 0, 0, 0] = -1.0
    return pixels


def _reference(pixels: torch.Tensor, tier: int, spatial_factor: int) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """The reference's padded canvas [3, T, Hc, Wc], image_size [Hc, Wc, h, w] and caption size for ``pixels``."""
    stand_in = SimpleNamespace(video_processor=VideoProcessor(vae_scale_factor=spatial_factor, resample="bilinear"))
    clip = pixels.permute(1, 0, 2, 3)  # [T, 3, H, W]: a video tensor
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # the processor's note that [-1, 1] tensors are deprecated
        frames, image_size, height, width = Cosmos3OmniPipeline._prepare_action_video_conditioning(
            stand_in, clip, tier, pixels.shape[1], "cpu", torch.float32
        )
    return frames[0], image_size, height, width


def _reference_crop(latents: torch.Tensor, image_size: torch.Tensor, spatial_factor: int) -> torch.Tensor:
    """The reference's latent crop of canvas latents [C, T, h, w]."""
    stand_in = SimpleNamespace(vae_scale_factor_spatial=spatial_factor)
    return Cosmos3OmniPipeline._remove_action_video_padding_from_latent(stand_in, latents[None], image_size)[0]


def _assert_parity(height: int, width: int, tier: int, spatial_factor: int, frames: int = 2, seed: int = 0) -> Canvas:
    """Our canvas, padded pixels and latent crop equal the reference's for one frame size."""
    pixels = _pixels(height, width, frames, seed)
    ref_frames, ref_size, ref_height, ref_width = _reference(pixels, tier, spatial_factor)
    canvas = plan_canvas(height, width, tier, spatial_factor)

    assert (canvas.height, canvas.width) == (ref_height, ref_width)
    assert ref_size.tolist() == [canvas.height, canvas.width, canvas.content_height, canvas.content_width]
    ours = to_canvas(pixels, canvas)
    assert ours.shape == ref_frames.shape == (3, frames, canvas.height, canvas.width)
    assert (ours - ref_frames).abs().max().item() <= 1e-6

    latents = torch.randn(4, frames, canvas.canvas_latent_height, canvas.canvas_latent_width)
    cropped = crop_latents(latents, canvas)
    assert torch.equal(cropped, _reference_crop(latents, ref_size, spatial_factor))
    assert cropped.shape[-2:] == (canvas.latent_height, canvas.latent_width)
    return canvas


def test_bins_are_the_reference_tables():
    assert sorted(CANVAS_BINS) == sorted(int(key) for key in _ACTION_RESOLUTION_BINS)
    for tier, bins in _ACTION_RESOLUTION_BINS.items():
        assert CANVAS_BINS[int(tier)] == tuple(bins.values())  # same canvases, same order (ties go first)
        assert all(float(ratio) == h / w for ratio, (h, w) in bins.items())  # the keys are exactly H / W


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("height,width", SIZES)
def test_parity_with_reference(height, width, tier):
    _assert_parity(height, width, tier, 16)


@pytest.mark.parametrize("height,width", ((480, 640), (200, 330), (100, 100), (66, 66)))
def test_parity_with_reference_small_spatial_factor(height, width):
    for tier in TIERS:
        _assert_parity(height, width, tier, 4, frames=1)  # the tiny space-to-depth codec's factor


def test_parity_over_random_sizes():
    rng = random.Random(0)
    for i in range(48):
        height, width = rng.randint(16, 400), rng.randint(16, 400)
        _assert_parity(height, width, TIERS[i % len(TIERS)], 16, frames=1, seed=i)


def test_droid_frame_is_captioned_on_the_736x544_canvas():
    canvas = plan_canvas(480, 640, 480, 16)
    assert (canvas.height, canvas.width) == (544, 736)
    assert (canvas.content_height, canvas.content_width) == (480, 640)  # fits: not resized
    assert (canvas.pad_bottom, canvas.pad_right, canvas.pad_mode) == (64, 96, "reflect")
    assert (canvas.latent_height, canvas.latent_width) == (30, 40)
    assert (canvas.decoded_height, canvas.decoded_width) == (canvas.video_height, canvas.video_width) == (480, 640)
    caption = Cosmos3OmniPipeline._build_action_json_prompt(
        "pick up the cup", view_point="ego_view", num_frames=17, fps=15.0, height=canvas.height, width=canvas.width
    )
    assert json.loads(caption)["resolution"] == {"H": 544, "W": 736}


def test_plans_of_note():
    # 720p at tier 480: downscaled by 0.65, 468 rows round up from 467.99..., 4 content rows lost to the floor.
    canvas = plan_canvas(720, 1280, 480, 16)
    assert (canvas.height, canvas.width, canvas.content_height, canvas.content_width) == (480, 832, 468, 832)
    assert (canvas.latent_height, canvas.decoded_height, canvas.video_height) == (29, 464, 464)
    # 1080p is off the 16-pixel grid: squashed to 1072 rows first, so even tier 720 gives 715 content rows.
    canvas = _assert_parity(1080, 1920, 720, 16, frames=1)
    assert (canvas.snapped_height, canvas.content_height, canvas.content_width) == (1072, 715, 1280)
    assert (canvas.decoded_height, canvas.decoded_width) == (704, 1280)
    # Off-grid frames are first floored to the codec's grid: 200x330 -> 192x320, exactly a tier-256 canvas.
    canvas = plan_canvas(200, 330, 256, 16)
    assert (canvas.snapped_height, canvas.snapped_width) == (192, 320)
    assert (canvas.content_height, canvas.content_width, canvas.pad_mode) == (192, 320, None)
    # Never upscaled: 100x100 -> 96x96 content on a 640x640 canvas, padded by replication (pad > content).
    canvas = plan_canvas(100, 100, 480, 16)
    assert (canvas.height, canvas.content_height, canvas.pad_mode) == (640, 96, "replicate")


def test_frame_on_a_canvas_passes_unchanged():
    for tier in TIERS:
        for height, width in CANVAS_BINS[tier]:
            canvas = plan_canvas(height, width, tier, 16)
            assert (canvas.content_height, canvas.content_width) == (canvas.height, canvas.width) == (height, width)
            assert canvas.pad_mode is None
    pixels = _pixels(192, 320)
    assert torch.equal(to_canvas(pixels, plan_canvas(192, 320, 256, 16)), pixels)


def test_content_frames():
    canvas = plan_canvas(720, 1280, 480, 16)
    decoded = torch.rand(3, 2, canvas.decoded_height, canvas.decoded_width)
    assert torch.equal(content_frames(decoded, canvas), decoded)  # the reference's output video, as is
    pixels = _pixels(720, 1280)
    on_canvas = to_canvas(pixels, canvas)
    ref_frames = _reference(pixels, 480, 16)[0]
    assert torch.equal(content_frames(on_canvas, canvas), ref_frames[..., :468, :832])  # the padding is gone
    # A content side under one latent: the one latent row still decodes 16 rows, 12 of them padding.
    thin = plan_canvas(16, 1280, 256, 16)
    assert (thin.content_height, thin.latent_height, thin.decoded_height, thin.video_height) == (4, 1, 16, 4)
    assert content_frames(torch.rand(3, 1, 16, 320), thin).shape == (3, 1, 4, 320)
    with pytest.raises(ValueError, match="464x832"):
        content_frames(torch.rand(3, 1, 468, 832), canvas)


@pytest.mark.parametrize("tier", (300, 0, 480.0, "480", True, None))
def test_invalid_tier(tier):
    with pytest.raises(ValueError, match=r"tier must be one of \[256, 480, 704, 720\]"):
        plan_canvas(480, 640, tier, 16)


@pytest.mark.parametrize("height,width", ((15, 100), (100, 8), (1, 1)))
def test_too_small_frame(height, width):
    with pytest.raises(ValueError, match=rf"{height}x{width} .*at least 16 pixels"):
        plan_canvas(height, width, 480, 16)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="spatial_factor"):
        plan_canvas(480, 640, 480, 0)
    with pytest.raises(ValueError, match="height"):
        plan_canvas(0, 640, 480, 16)
    with pytest.raises(ValueError, match="multiple of the codec's spatial factor 64"):
        plan_canvas(480, 640, 480, 64)  # 544x736 is not on a 64-pixel grid
    canvas = plan_canvas(480, 640, 480, 16)
    with pytest.raises(ValueError, match="planned for 480x640"):
        to_canvas(_pixels(480, 630), canvas)
    with pytest.raises(ValueError, match=r"\[3, T, H, W\]"):
        to_canvas(_pixels(480, 640)[:2], canvas)
    with pytest.raises(ValueError, match="34x46"):
        crop_latents(torch.zeros(4, 2, 30, 40), canvas)
