"""The action-mode conditioning canvas: how a camera frame is sized, padded and cropped around the codec.

The reference pipeline never feeds action-mode frames at their own size. It (1) floors each side of the
frame to a multiple of the codec's spatial factor (its ``VideoProcessor`` does this before anything else,
with nearest-neighbour resampling for tensor input), (2) picks the canvas of the resolution tier whose
aspect ratio H / W is closest to the frame's, (3) downscales the frame to fit inside the canvas (bicubic,
antialiased, round half up, never upscaling), (4) pads it right and bottom to the canvas (reflect, or
replicate when a pad is at least as wide as the content), states the *canvas* size in the caption,
encodes the padded clip, and (5) keeps only the latents that start inside the content
(``content // spatial_factor``, at least 1). The video it returns is the decode of those cropped latents:
the content floored to a multiple of the spatial factor, neither the canvas nor the input size.

Everything here is plain arithmetic plus three torch ops (nearest and bicubic ``interpolate``, ``pad``)
called with the reference's arguments, so our canvases match the reference's bit for bit.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

import torch
import torch.nn.functional as F

DEFAULT_TIER = 480

# Action resolution tier -> canvases (H, W); each canvas stands for the aspect ratio H / W. Order matters:
# ties in aspect-ratio distance go to the earlier canvas, as in the reference's bin tables.
CANVAS_BINS: Mapping[int, tuple[tuple[int, int], ...]] = MappingProxyType(
    {
        256: ((256, 256), (256, 320), (320, 256), (192, 320), (320, 192)),
        480: ((640, 640), (544, 736), (736, 544), (480, 832), (832, 480)),
        704: ((960, 960), (832, 1088), (1088, 832), (704, 1280), (1280, 704)),
        720: ((960, 960), (832, 1104), (1104, 832), (720, 1280), (1280, 720)),
    }
)

PadMode = Literal["reflect", "replicate"]


def _check_positive_int(value: Any, name: str) -> int:
    """``value`` as an int, or a ValueError naming ``name``: sizes and factors must be positive ints."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}.")
    return int(value)


@dataclass(frozen=True)
class Canvas:
    """Where a frame sits in the canvas the model is conditioned on, and which latents cover it."""

    tier: int | None  # the resolution tier the canvas was picked from (None: native, the frame as it is)
    spatial_factor: int  # the codec's pixels per latent, per side
    source_height: int  # the frame as given
    source_width: int
    snapped_height: int  # the frame floored to a multiple of spatial_factor (the reference's first step)
    snapped_width: int
    height: int  # the canvas: what the caption states and what the codec encodes
    width: int
    content_height: int  # the resized frame inside the canvas, at its top-left
    content_width: int

    @property
    def pad_bottom(self) -> int:
        """Rows of padding below the content."""
        return self.height - self.content_height

    @property
    def pad_right(self) -> int:
        """Columns of padding right of the content."""
        return self.width - self.content_width

    @property
    def pad_mode(self) -> PadMode | None:
        """How the padding is filled: reflect, or replicate when a pad is as wide as the content; None if no pad."""
        if not (self.pad_bottom or self.pad_right):
            return None
        if self.pad_right >= self.content_width or self.pad_bottom >= self.content_height:
            return "replicate"  # reflect cannot pad by the content's own width or more
        return "reflect"

    @property
    def canvas_latent_height(self) -> int:
        """Latent rows the codec makes of the canvas."""
        return self.height // self.spatial_factor

    @property
    def canvas_latent_width(self) -> int:
        """Latent columns the codec makes of the canvas."""
        return self.width // self.spatial_factor

    @property
    def latent_height(self) -> int:
        """Latent rows kept for denoising: those starting inside the content (floor), at least one."""
        return max(self.content_height // self.spatial_factor, 1)

    @property
    def latent_width(self) -> int:
        """Latent columns kept for denoising: those starting inside the content (floor), at least one."""
        return max(self.content_width // self.spatial_factor, 1)

    @property
    def decoded_height(self) -> int:
        """Rows of the decoded video (the reference returns exactly this)."""
        return self.latent_height * self.spatial_factor

    @property
    def decoded_width(self) -> int:
        """Columns of the decoded video (the reference returns exactly this)."""
        return self.latent_width * self.spatial_factor

    @property
    def video_height(self) -> int:
        """Rows ``content_frames`` returns: the decoded rows that show content."""
        return min(self.decoded_height, self.content_height)

    @property
    def video_width(self) -> int:
        """Columns ``content_frames`` returns: the decoded columns that show content."""
        return min(self.decoded_width, self.content_width)


def plan_canvas(height: int, width: int, tier: int, spatial_factor: int) -> Canvas:
    """The reference's canvas for a ``height`` x ``width`` frame at ``tier``, for a codec of ``spatial_factor``."""
    spatial_factor = _check_positive_int(spatial_factor, "spatial_factor")
    if isinstance(tier, bool) or not isinstance(tier, numbers.Integral) or int(tier) not in CANVAS_BINS:
        raise ValueError(f"tier must be one of {sorted(CANVAS_BINS)}, got {tier!r}.")
    tier = int(tier)
    height = _check_positive_int(height, "height")
    width = _check_positive_int(width, "width")
    if height < spatial_factor or width < spatial_factor:
        raise ValueError(
            f"A {height}x{width} (HxW) frame is too small for a codec with spatial factor {spatial_factor}: "
            f"both sides must be at least {spatial_factor} pixels."
        )

    # The reference's VideoProcessor floors both sides to the codec's grid before the canvas is chosen.
    snapped_height = height - height % spatial_factor
    snapped_width = width - width % spatial_factor

    ratio = snapped_height / snapped_width
    canvas_height, canvas_width = min(CANVAS_BINS[tier], key=lambda hw: abs(hw[0] / hw[1] - ratio))
    if canvas_height % spatial_factor or canvas_width % spatial_factor:
        raise ValueError(
            f"The {canvas_height}x{canvas_width} canvas of tier {tier} is not a multiple of the codec's "
            f"spatial factor {spatial_factor}."
        )

    # Fit inside the canvas, never upscale; round half up (the reference's int(x + 0.5)), at least one pixel.
    scale = min(canvas_width / snapped_width, canvas_height / snapped_height, 1.0)
    content_height = max(1, int(scale * snapped_height + 0.5))
    content_width = max(1, int(scale * snapped_width + 0.5))
    return Canvas(
        tier=tier,
        spatial_factor=spatial_factor,
        source_height=height,
        source_width=width,
        snapped_height=snapped_height,
        snapped_width=snapped_width,
        height=canvas_height,
        width=canvas_width,
        content_height=content_height,
        content_width=content_width,
    )


def native_canvas(height: int, width: int, spatial_factor: int) -> Canvas:
    """No canvas: the frame is encoded and captioned at its own size (models trained on native frames)."""
    spatial_factor = _check_positive_int(spatial_factor, "spatial_factor")
    height, width = _check_positive_int(height, "height"), _check_positive_int(width, "width")
    if height % spatial_factor or width % spatial_factor:
        raise ValueError(
            f"with tier=None (native size) frames must be multiples of the codec's spatial factor {spatial_factor}, "
            f"got {height}x{width} (HxW); pass a resolution tier to resize and pad them as the reference does."
        )
    return Canvas(None, spatial_factor, height, width, height, width, height, width, height, width)


def make_canvas(height: int, width: int, tier: int | None, spatial_factor: int) -> Canvas:
    """`plan_canvas` for a tier, `native_canvas` for tier None."""
    if tier is None:
        return native_canvas(height, width, spatial_factor)
    return plan_canvas(height, width, tier, spatial_factor)


def to_canvas(pixels: torch.Tensor, canvas: Canvas) -> torch.Tensor:
    """Frames [3, T, H, W] in [-1, 1] -> the padded canvas [3, T, Hc, Wc] the codec encodes, as the reference."""
    if pixels.ndim != 4 or pixels.shape[0] != 3 or not pixels.is_floating_point():
        raise ValueError(f"pixels must be a float tensor [3, T, H, W], got {pixels.dtype} {tuple(pixels.shape)}.")
    if tuple(pixels.shape[-2:]) != (canvas.source_height, canvas.source_width):
        raise ValueError(
            f"pixels are {pixels.shape[-2]}x{pixels.shape[-1]} (HxW) but the canvas was planned for "
            f"{canvas.source_height}x{canvas.source_width} frames."
        )
    # The reference resizes in float32, one frame per batch row: [T, 3, H, W], contiguous.
    frames = pixels.to(torch.promote_types(pixels.dtype, torch.float32)).permute(1, 0, 2, 3).contiguous()
    if (canvas.snapped_height, canvas.snapped_width) != (canvas.source_height, canvas.source_width):
        # [T, 3, H, W] -> [T, 3, Hs, Ws]: the VideoProcessor's grid snap (F.interpolate's default, nearest).
        frames = F.interpolate(frames, size=(canvas.snapped_height, canvas.snapped_width), mode="nearest")
    if (canvas.content_height, canvas.content_width) != (canvas.snapped_height, canvas.snapped_width):
        # [T, 3, Hs, Ws] -> [T, 3, h, w]: the downscale into the canvas.
        frames = F.interpolate(
            frames,
            size=(canvas.content_height, canvas.content_width),
            mode="bicubic",
            align_corners=False,
            antialias=True,
        )
    if canvas.pad_mode is not None:
        # [T, 3, h, w] -> [T, 3, Hc, Wc]: pad right and bottom only, so the content stays at the top-left.
        frames = F.pad(frames, (0, canvas.pad_right, 0, canvas.pad_bottom), mode=canvas.pad_mode)
    return frames.permute(1, 0, 2, 3).contiguous()  # [3, T, Hc, Wc]


def crop_latents(latents: torch.Tensor, canvas: Canvas) -> torch.Tensor:
    """Latents of the canvas [..., C, T, Hc/s, Wc/s] -> those over the content [..., C, T, h', w'], as the reference."""
    expected = (canvas.canvas_latent_height, canvas.canvas_latent_width)
    if latents.ndim < 2 or tuple(latents.shape[-2:]) != expected:
        raise ValueError(
            f"latents must end in the canvas's latent grid {expected[0]}x{expected[1]} (HxW), "
            f"got shape {tuple(latents.shape)}."
        )
    return latents[..., : canvas.latent_height, : canvas.latent_width].contiguous()


def content_frames(frames: torch.Tensor, canvas: Canvas) -> torch.Tensor:
    """Decoded frames [..., H, W] -> the part showing content [..., h, w], so users never get padding back."""
    # Decoded from crop_latents' output (H, W = decoded size, the reference's output video) this is the identity
    # unless a content side is under one latent; decoded from the whole canvas it is the content region.
    allowed = {(canvas.decoded_height, canvas.decoded_width), (canvas.height, canvas.width)}
    size = tuple(frames.shape[-2:])
    if frames.ndim < 2 or size not in allowed:
        raise ValueError(
            f"frames must be {canvas.decoded_height}x{canvas.decoded_width} (decoded from the cropped latents) "
            f"or {canvas.height}x{canvas.width} (the whole canvas), got shape {tuple(frames.shape)}."
        )
    return frames[..., : min(size[0], canvas.content_height), : min(size[1], canvas.content_width)]
