"""Our generator reproduces diffusers' Cosmos3OmniTransformer on identical random weights (float32)."""

import pytest
import torch

from cosmos3_world import GenerationSpec
from cosmos3_world.testing.reference import model_pair, reference_inputs, rel

TOL = 1e-5

VARIANTS = {
    "silu": {},
    "relu2": dict(hidden_act="relu2"),
    "no_text_qk_norm": dict(qk_norm_for_text=False),
    "und_k_norm_for_gen": dict(qk_norm_for_text=False, use_und_k_norm_for_gen=True),
    "mha": dict(num_key_value_heads=4),
    "gqa4": dict(num_key_value_heads=1),
    "no_fps_modulation": dict(enable_fps_modulation=False, unified_3d_mrope_reset_spatial_ids=False),
    "vision_only": dict(action_gen=False, sound_gen=False),
    "attention_bias": dict(attention_bias=True, hidden_act="relu2", num_key_value_heads=1),
    "fast_rope": dict(rope_theta=0.3),  # theta < 1: every slot turns faster than 1 rad per position
}

# (prompt length, latent [T, H, W], clean vision frames, sound frames, action tokens, clean actions, domain, t, fps)
CASES = [
    (1, (1, 4, 4), [], 0, 0, [], 0, 999.0, 24.0),
    (7, (3, 5, 7), [0], 9, 4, [], 3, 500.0, 24.0),
    (64, (2, 3, 3), [0], 0, 8, list(range(8)), 5, 250.0, 10.0),
    (300, (4, 6, 4), [0, 1], 5, 12, [], 7, 20.0, 30.0),
    (33, (5, 2, 6), [0, 2], 0, 3, [1], 1, 700.0, 15.0),
]


def run_case(ours, ref, case, seed):
    L, shape, cond, n_sound, n_action, act_cond, domain, t, fps = case
    cfg = ref.config
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, cfg.vocab_size, (L,), generator=g).tolist()
    vision = torch.randn(cfg.latent_channel, *shape, generator=g)
    sound = torch.randn(cfg.sound_dim, n_sound, generator=g) if cfg.sound_gen and n_sound else None
    action = torch.randn(n_action, cfg.action_dim, generator=g) if cfg.action_gen and n_action else None
    kw = reference_inputs(
        ref, ids, vision, cond, t, fps=fps, sound=sound, action=action, action_cond=act_cond, domain_id=domain
    )
    with torch.no_grad():
        expected = ref(**kw)
        full = ours(**kw)
    spec = GenerationSpec(
        prefix=ours.encode_prefix(ids),
        vision_shape=shape,
        vision_noisy=tuple(f for f in range(shape[0]) if f not in cond),
        fps=fps,
        sound_len=0 if sound is None else n_sound,
        action_len=0 if action is None else n_action,
        action_noisy=tuple(a for a in range(n_action) if a not in act_cond),
        domain_id=domain,
    )
    cached = ours.denoise_step(ours.plan([spec]), [vision], t, sound=[sound], action=[action])
    return expected, full, cached


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_matches_diffusers_on_every_variant(variant):
    ours, ref = model_pair(seed=1, **VARIANTS[variant])
    for i, case in enumerate(CASES):
        expected, full, cached = run_case(ours, ref, case, seed=i)
        assert len(full.sample) == 1 and full.sample[0].shape == expected.sample[0].shape
        assert rel(full.sample[0], expected.sample[0]) <= TOL, (variant, case)
        assert rel(cached.sample[0][None], expected.sample[0]) <= TOL, (variant, case)
        for name in ("sound", "action"):
            exp = getattr(expected, name)
            if exp is None:
                assert getattr(full, name) is None
                continue
            assert rel(getattr(full, name)[0], exp[0]) <= TOL, (variant, case, name)
            assert rel(getattr(cached, name)[0], exp[0]) <= TOL, (variant, case, name)
            # clean positions are exactly zero, as in the reference
            assert torch.equal(getattr(cached, name)[0] == 0, exp[0] == 0)


def test_clean_frames_are_zero_and_noisy_frames_are_not():
    ours, ref = model_pair(seed=2)
    expected, full, cached = run_case(ours, ref, CASES[3], seed=0)
    v = cached.sample[0]
    assert torch.all(v[:, :2] == 0) and torch.all(v[:, 2:].abs().sum((0, 2, 3)) > 0)


def test_state_dict_moves_both_ways_strictly():
    ours, ref = model_pair(seed=3, hidden_act="relu2", qk_norm_for_text=False, use_und_k_norm_for_gen=True)
    assert set(ours.state_dict()) == set(ref.state_dict())
    ref.load_state_dict(ours.state_dict(), strict=True)
    ours.load_state_dict(ref.state_dict(), strict=True)
    for k, v in ours.state_dict().items():
        assert v.shape == ref.state_dict()[k].shape, k


def test_forward_returns_tuple_without_return_dict():
    ours, ref = model_pair(seed=4)
    L, shape = 5, (2, 4, 4)
    kw = reference_inputs(ref, list(range(1, L + 1)), torch.randn(8, *shape), [0], 100.0)
    out = ours(**kw, return_dict=False)
    assert isinstance(out, tuple) and len(out) == 3 and out[1] is None and out[2] is None
    assert rel(out[0][0], ref(**kw, return_dict=False)[0][0]) <= TOL
