"""Codecs: lossless space-to-depth, the Wan 2.2 VAE wrapper (tiny random weights), loading, validation."""

from __future__ import annotations

import copy
import io
import json
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLWan
from diffusers.pipelines.cosmos.pipeline_cosmos3_omni import Cosmos3OmniPipeline

from cosmos3_world.codecs import Codec, SpaceToDepthCodec, WanVAECodec, load_codec
from cosmos3_world.codecs.wan_decoder import WanFastDecoder, unsupported_reason
from cosmos3_world.testing import tiny_wan_vae_config


def _pixels(*shape: int, seed: int = 0) -> torch.Tensor:
    """Uniform random pixels in [-1, 1]."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=generator) * 2 - 1


@pytest.fixture(scope="module")
def vae() -> AutoencoderKLWan:
    torch.manual_seed(0)
    return AutoencoderKLWan(**tiny_wan_vae_config()).eval()


@pytest.fixture(scope="module")
def wan(vae: AutoencoderKLWan) -> WanVAECodec:
    return WanVAECodec(vae)


def _stats(vae: AutoencoderKLWan) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) from the config as [1, C, 1, 1, 1]."""
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
    return mean, std


# --- space-to-depth ---------------------------------------------------------------------------


def test_space_to_depth_round_trip_is_bit_exact_with_pixel_unshuffle_layout() -> None:
    codec = SpaceToDepthCodec()
    x = _pixels(2, 3, 3, 64, 64)
    z = codec.encode(x)
    assert z.shape == (2, 48, 3, 16, 16) and z.dtype == torch.float32
    assert (codec.latent_channels, codec.spatial_factor, codec.temporal_factor) == (48, 4, 1)
    # Per frame, the layout is F.pixel_unshuffle's: channel c*16 + dy*4 + dx.
    for t in range(3):
        assert torch.equal(z[:, :, t], F.pixel_unshuffle(x[:, :, t], 4))
    assert torch.equal(codec.decode(z), x)


def test_space_to_depth_temporal_factor_is_causal_and_lossless() -> None:
    codec = SpaceToDepthCodec(patch=4, temporal_factor=4)
    x = _pixels(1, 3, 9, 32, 32)
    z = codec.encode(x)
    assert z.shape == (1, 192, 3, 8, 8)
    assert torch.equal(codec.decode(z), x)
    # Latent frame 0 depends on pixel frame 0 only.
    y = x.clone()
    y[:, :, 1:] = _pixels(1, 3, 8, 32, 32, seed=1)
    assert torch.equal(codec.encode(y)[:, :, 0], z[:, :, 0])


def test_space_to_depth_decode_clamps_and_to_changes_working_dtype() -> None:
    codec = SpaceToDepthCodec()
    z = codec.encode(_pixels(1, 3, 1, 16, 16)) * 3
    assert codec.decode(z).abs().max() == 1.0
    assert codec.to(dtype=torch.bfloat16) is codec and codec.dtype == torch.bfloat16
    x = _pixels(1, 3, 1, 16, 16)
    z = codec.encode(x)
    assert z.dtype == torch.float32
    assert torch.equal(z, F.pixel_unshuffle(x[:, :, 0], 4).bfloat16().float().unsqueeze(2))


# --- Wan 2.2 VAE ------------------------------------------------------------------------------


def test_tiny_wan_config_has_wan22_layout(vae: AutoencoderKLWan, wan: WanVAECodec) -> None:
    config = tiny_wan_vae_config()
    assert config["z_dim"] == 48 and config["is_residual"] and config["patch_size"] == 2
    assert len(set(config["latents_mean"])) > 1 and len(set(config["latents_std"])) > 1
    assert vae.config.scale_factor_spatial == 16
    assert (wan.latent_channels, wan.spatial_factor, wan.temporal_factor) == (48, 16, 4)


def test_wan_encode_shapes_one_and_five_frames(wan: WanVAECodec) -> None:
    assert wan.encode(_pixels(1, 3, 1, 64, 64)).shape == (1, 48, 1, 4, 4)
    z = wan.encode(_pixels(2, 3, 5, 32, 64))
    assert z.shape == (2, 48, 2, 2, 4) and z.dtype == torch.float32


def test_wan_frame_arithmetic(wan: WanVAECodec) -> None:
    assert [wan.latent_frames(n) for n in (1, 5, 9, 33)] == [1, 2, 3, 9]
    assert [wan.pixel_frames(n) for n in (1, 2, 3, 9)] == [1, 5, 9, 33]
    for bad in (0, 2, 4, 6):
        with pytest.raises(ValueError, match="num_pixel_frames"):
            wan.latent_frames(bad)
    with pytest.raises(ValueError, match="num_latent_frames"):
        wan.pixel_frames(0)


def test_wan_encode_normalises_the_posterior_mode(vae: AutoencoderKLWan, wan: WanVAECodec) -> None:
    x = _pixels(1, 3, 5, 32, 32)
    with torch.no_grad():
        raw = vae.encode(x).latent_dist.mode()
    mean, std = _stats(vae)
    z = wan.encode(x)
    assert torch.equal(z, (raw - mean) * (1.0 / std))
    assert not torch.allclose(z, raw, atol=1e-2)


def test_wan_encode_matches_reference_pipeline(vae: AutoencoderKLWan, wan: WanVAECodec) -> None:
    # The pipeline's own _encode_video, with the statistics its __init__ would set up.
    pipe = SimpleNamespace(
        vae=vae,
        _vae_latents_mean=torch.tensor(vae.config.latents_mean, dtype=vae.dtype),
        _vae_latents_inv_std=1.0 / torch.tensor(vae.config.latents_std, dtype=vae.dtype),
    )
    x = _pixels(1, 3, 5, 32, 32, seed=3)
    with torch.no_grad():
        expected = Cosmos3OmniPipeline._encode_video(pipe, x).float()
    assert torch.equal(wan.encode(x), expected)


def test_wan_encoder_convs_run_on_onednn_with_diffusers_results() -> None:
    torch.manual_seed(0)
    vae = AutoencoderKLWan(**tiny_wan_vae_config()).eval()
    plain = copy.deepcopy(vae)
    WanVAECodec(vae)  # routes the encoder's convolutions through oneDNN, on this instance only
    routed = [m for m in vae.encoder.modules() if "_conv_forward" in vars(m)]
    assert len(routed) > 10 and not any("_conv_forward" in vars(m) for m in plain.modules())
    with torch.no_grad():
        for frames in (1, 5):
            x = _pixels(1, 3, frames, 64, 48, seed=frames)
            expected = plain.encode(x).latent_dist.mode()
            torch.testing.assert_close(vae.encode(x).latent_dist.mode(), expected, atol=1e-5, rtol=1e-5)
        x = _pixels(1, 3, 1, 32, 32)
        for clone in (copy.deepcopy(vae), torch.load(_saved(vae), weights_only=False)):  # still bound to itself
            assert clone.encoder.conv_in._conv_forward.args[0] is clone.encoder.conv_in
            torch.testing.assert_close(clone.encode(x).latent_dist.mode(), plain.encode(x).latent_dist.mode(),
                                       atol=1e-5, rtol=1e-5)  # fmt: skip


def _saved(module: torch.nn.Module) -> io.BytesIO:
    buffer = io.BytesIO()
    torch.save(module, buffer)
    buffer.seek(0)
    return buffer


def test_wan_encode_is_causal(wan: WanVAECodec) -> None:
    x = _pixels(1, 3, 5, 32, 32)
    y = x.clone()
    y[:, :, 1:] = _pixels(1, 3, 4, 32, 32, seed=1)
    zx, zy = wan.encode(x), wan.encode(y)
    assert torch.equal(zx[:, :, 0], zy[:, :, 0])
    assert not torch.allclose(zx[:, :, 1], zy[:, :, 1])


def test_wan_decode_inverts_normalisation(vae: AutoencoderKLWan, wan: WanVAECodec) -> None:
    x = _pixels(1, 3, 5, 32, 32)
    with torch.no_grad():
        raw = vae.encode(x).latent_dist.mode()
        expected = vae.decode(raw).sample
    z = wan.encode(x)
    decoded = wan.decode(z)
    assert decoded.shape == (1, 3, 5, 32, 32) and decoded.dtype == torch.float32
    torch.testing.assert_close(decoded, expected, rtol=0, atol=1e-5)
    # And the reference pipeline's decode formula (the fast decoder: equal up to float rounding).
    mean, std = _stats(vae)
    with torch.no_grad():
        reference = vae.decode(z / (1.0 / std) + mean).sample
    torch.testing.assert_close(decoded, reference, rtol=0, atol=1e-5)


# --- the fast whole-clip decoder ------------------------------------------------------------


def _wan_vae(seed: int = 0, **overrides) -> AutoencoderKLWan:
    """A random tiny VAE; RMS gammas perturbed (diffusers initialises them to 1) so they matter."""
    torch.manual_seed(seed)
    vae = AutoencoderKLWan(**{**tiny_wan_vae_config(), **overrides}).eval()
    with torch.no_grad():
        for name, p in vae.decoder.named_parameters():
            if name.endswith("gamma"):
                p.mul_(1 + 0.25 * torch.randn_like(p))
    return vae


# Wan 2.1 layout: plain up blocks whose upsamplers halve the channels, no patchify, z_dim 16.
_WAN21 = {
    "is_residual": False,
    "patch_size": None,
    "in_channels": 3,
    "out_channels": 3,
    "z_dim": 16,
    "decoder_base_dim": None,
    "scale_factor_spatial": 8,
    "latents_mean": [0.0] * 16,
    "latents_std": [1.0] * 16,
}


@pytest.fixture(scope="module")
def vaes(vae: AutoencoderKLWan) -> dict[str, AutoencoderKLWan]:
    return {
        "wan22": vae,
        "wan22_gamma": _wan_vae(1),
        "wan22_2res": _wan_vae(2, num_res_blocks=2, decoder_base_dim=16),
        "wan21": _wan_vae(3, **_WAN21),
    }


@pytest.mark.parametrize(
    ("name", "shape"),
    [
        ("wan22", (1, 48, 1, 4, 4)),
        ("wan22", (1, 48, 3, 8, 8)),
        ("wan22_gamma", (1, 48, 2, 4, 6)),
        ("wan22_gamma", (1, 48, 5, 4, 4)),
        ("wan22_gamma", (2, 48, 3, 4, 4)),
        ("wan22_gamma", (1, 48, 2, 3, 5)),
        ("wan22_2res", (1, 48, 3, 4, 6)),
        ("wan21", (1, 16, 1, 4, 4)),
        ("wan21", (1, 16, 3, 4, 6)),
        ("wan21", (2, 16, 2, 3, 5)),
    ],
)
def test_fast_decoder_matches_diffusers_float32(vaes, name: str, shape: tuple[int, ...]) -> None:
    vae = vaes[name]
    assert unsupported_reason(vae) is None
    z = torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape)))
    with torch.no_grad():
        expected = vae.decode(z).sample
    fast = WanFastDecoder(vae)
    out = fast(z)
    assert out.shape == expected.shape and out.dtype == torch.float32 and out.is_contiguous()
    assert expected.std() > 0.05 and (expected.abs() < 1).float().mean() > 0.9  # a meaningful comparison
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
    # A few latent frames per pass, with the causal cache carried between passes: the same.
    if shape[2] > 1:
        assert fast.max_frames_per_pass(z) >= shape[2]
        small = WanFastDecoder(vae, max_activation_bytes=1)
        assert small.max_frames_per_pass(z) == 1
        torch.testing.assert_close(small(z), expected, rtol=0, atol=1e-5)
        torch.testing.assert_close(fast(z, frames_per_pass=2), expected, rtol=0, atol=1e-5)


def test_fast_decoder_generic_path_without_onednn(vaes, monkeypatch) -> None:
    # Other devices: plain F.conv3d on contiguous activations, no oneDNN-specific kernels.
    from cosmos3_world import kernels
    from cosmos3_world.codecs import wan_decoder

    monkeypatch.setattr(kernels, "onednn_applies", lambda x: False)
    monkeypatch.setattr(wan_decoder, "onednn_applies", lambda x: False)
    for name, shape in (("wan22_gamma", (1, 48, 3, 4, 4)), ("wan21", (1, 16, 2, 3, 5))):
        vae = vaes[name]
        z = torch.randn(*shape, generator=torch.Generator().manual_seed(3))
        with torch.no_grad():
            expected = vae.decode(z).sample
        torch.testing.assert_close(WanFastDecoder(vae)(z), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("c_in", "c_out", "factor_t"), [(8, 8, 2), (8, 4, 2), (8, 4, 1), (4, 4, 1), (8, 2, 2), (16, 6, 2)]
)
@pytest.mark.parametrize("first", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fast_decoder_dup_up_shortcut(c_in: int, c_out: int, factor_t: int, first: bool, dtype) -> None:
    from diffusers.models.autoencoders.autoencoder_kl_wan import DupUp3D

    dup = DupUp3D(c_in, c_out, factor_t=factor_t, factor_s=2)
    x = torch.randn(2, c_in, 3, 4, 5).to(dtype).contiguous(memory_format=torch.channels_last_3d)
    expected = dup(x, first_chunk=first)
    base = torch.randn_like(expected)
    out = WanFastDecoder._add_dup_up(base.clone(), x, dup, first)
    torch.testing.assert_close(out, base + expected, rtol=0, atol=0)


def test_fast_decoder_bfloat16_error_is_no_worse_than_diffusers(vaes) -> None:
    # Reference: float32 arithmetic on the bfloat16-rounded weights, so only the arithmetic differs.
    half = copy.deepcopy(vaes["wan22_gamma"]).to(torch.bfloat16)
    full = copy.deepcopy(half).to(torch.float32)
    z = torch.randn(1, 48, 3, 8, 8, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        reference = full.decode(z).sample
        theirs = half.decode(z.bfloat16()).sample.float()
    ours = WanVAECodec(half)._fast_decoder(z.bfloat16())
    assert ours.dtype == torch.bfloat16
    ours = ours.float()
    their_max, our_max = (theirs - reference).abs().max(), (ours - reference).abs().max()
    their_rel, our_rel = (theirs - reference).norm() / reference.norm(), (ours - reference).norm() / reference.norm()
    assert our_max <= 1.5 * their_max and our_rel <= 1.5 * their_rel, (our_max, their_max, our_rel, their_rel)


def test_wan_codec_decodes_with_the_fast_decoder(vae: AutoencoderKLWan, monkeypatch) -> None:
    z = torch.randn(2, 48, 5, 4, 4, generator=torch.Generator().manual_seed(1))
    mean, std = _stats(vae)
    with torch.no_grad():
        expected = vae.decode(z / (1.0 / std) + mean).sample  # diffusers, before it is disabled below

    def no_diffusers(*args, **kwargs):
        raise AssertionError("vae.decode called")

    monkeypatch.setattr(vae, "decode", no_diffusers)
    for codec in (WanVAECodec(vae), WanVAECodec(vae, decode_frames_per_pass=2)):
        assert codec._fast_decoder is not None
        torch.testing.assert_close(codec.decode(z), expected, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="decode_frames_per_pass"):
        WanVAECodec(vae, decode_frames_per_pass=0)
    # Tiling is diffusers' own memory scheme: honour it by decoding through diffusers.
    codec = WanVAECodec(vae)
    monkeypatch.setattr(vae, "use_tiling", True)
    with pytest.raises(AssertionError, match="vae.decode called"):
        codec.decode(z)


def test_wan_codec_falls_back_to_diffusers_for_an_unknown_decoder_structure(vae: AutoencoderKLWan) -> None:
    odd = copy.deepcopy(vae)
    odd.decoder.up_blocks[1].resnets[0].nonlinearity = torch.nn.GELU()
    assert "non-SiLU" in unsupported_reason(odd)
    codec = WanVAECodec(odd)
    assert codec._fast_decoder is None
    z = torch.randn(1, 48, 2, 4, 4, generator=torch.Generator().manual_seed(2))
    mean, std = _stats(odd)
    with torch.no_grad():
        expected = odd.decode(z / (1.0 / std) + mean).sample
    assert torch.equal(codec.decode(z), expected)


def test_wan_rejects_contradictory_scale_factor() -> None:
    with pytest.raises(ValueError, match="scale_factor_spatial"):
        WanVAECodec(AutoencoderKLWan(**{**tiny_wan_vae_config(), "scale_factor_spatial": 8}))


# --- save / load ------------------------------------------------------------------------------


def test_load_space_to_depth_codec(tmp_path) -> None:
    SpaceToDepthCodec().save_pretrained(tmp_path / "vae")
    config = json.loads((tmp_path / "vae" / "config.json").read_text())
    assert {k: config[k] for k in ("_class_name", "patch", "channels")} == {
        "_class_name": "SpaceToDepthCodec",
        "patch": 4,
        "channels": 3,
    }
    codec = load_codec(tmp_path)
    assert isinstance(codec, SpaceToDepthCodec)
    assert (codec.latent_channels, codec.spatial_factor, codec.temporal_factor) == (48, 4, 1)
    SpaceToDepthCodec(patch=2, temporal_factor=4).save_pretrained(tmp_path / "other")
    other = SpaceToDepthCodec.from_pretrained(tmp_path / "other")
    assert (other.latent_channels, other.spatial_factor, other.temporal_factor) == (48, 2, 4)


def test_load_wan_codec(tmp_path, vae: AutoencoderKLWan, wan: WanVAECodec) -> None:
    vae.save_pretrained(tmp_path / "vae")
    codec = load_codec(tmp_path)
    assert isinstance(codec, WanVAECodec)
    x = _pixels(1, 3, 1, 32, 32)
    assert torch.equal(codec.encode(x), wan.encode(x))
    half = load_codec(tmp_path, torch_dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16
    z = half.encode(x)
    assert z.dtype == torch.float32
    torch.testing.assert_close(z, wan.encode(x), rtol=0.1, atol=0.1)


def test_load_codec_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        load_codec(tmp_path)
    (tmp_path / "vae").mkdir()
    (tmp_path / "vae" / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))
    with pytest.raises(ValueError, match="AutoencoderKL"):
        load_codec(tmp_path)


# --- validation -------------------------------------------------------------------------------


@pytest.fixture(params=["space_to_depth", "wan"])
def codec(request, wan: WanVAECodec) -> Codec:
    return SpaceToDepthCodec(patch=16) if request.param == "space_to_depth" else wan


def _nan_pixels() -> torch.Tensor:
    x = _pixels(1, 3, 1, 32, 32)
    x[0, 1, 0, 5, 7] = float("nan")
    return x


@pytest.mark.parametrize(
    ("pixels", "message"),
    [
        (_pixels(3, 1, 32, 32), "pixels must have rank 5"),
        (_pixels(1, 4, 1, 32, 32), "pixels must have 3 channels"),
        (_pixels(1, 3, 1, 40, 32), "pixels height and width must be multiples of the spatial factor 16"),
        (torch.zeros(1, 3, 1, 32, 32, dtype=torch.uint8), "pixels must have a floating dtype"),
        (_nan_pixels(), "pixels must contain only finite values"),
    ],
    ids=["rank", "channels", "height", "integer", "nan"],
)
def test_encode_rejects_bad_pixels(codec: Codec, pixels: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        codec.encode(pixels)


def test_encode_rejects_frames_the_causal_codec_cannot_express(wan: WanVAECodec) -> None:
    with pytest.raises(ValueError, match=r"pixels must have 1 \+ 4\*n frames.*T=3"):
        wan.encode(_pixels(1, 3, 3, 32, 32))


def test_decode_rejects_bad_latents(codec: Codec) -> None:
    c = codec.latent_channels
    with pytest.raises(ValueError, match="latents must have rank 5"):
        codec.decode(torch.zeros(c, 1, 2, 2))
    with pytest.raises(ValueError, match=f"latents must have {c} channels"):
        codec.decode(torch.zeros(1, c + 1, 1, 2, 2))
    with pytest.raises(ValueError, match="latents must have a floating dtype"):
        codec.decode(torch.zeros(1, c, 1, 2, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="latents must contain only finite values"):
        codec.decode(torch.full((1, c, 1, 2, 2), float("inf")))


def test_codec_constructor_validation() -> None:
    with pytest.raises(ValueError, match="patch"):
        SpaceToDepthCodec(patch=0)
    with pytest.raises(TypeError, match="AutoencoderKLWan"):
        WanVAECodec(torch.nn.Conv3d(3, 3, 1))
