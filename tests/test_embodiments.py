"""Embodiments: built-in domain ids and widths, registry rules, action preparation and its inverse."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cosmos3_world.engine import embodiments
from cosmos3_world.engine.embodiments import (
    DEFAULT_EMBODIMENTS,
    Embodiment,
    EmbodimentRegistry,
    UnknownEmbodimentError,
    get_embodiment,
    prepare_actions,
    register_embodiment,
    unnormalize_actions,
)

# (domain id, raw width) as published with the model.
PUBLISHED = {
    "av": (1, 9),
    "camera_pose": (2, 9),
    "hand_pose": (3, 57),
    "pusht": (4, 2),
    "umi": (6, 10),
    "bridge_orig_lerobot": (7, 10),
    "droid_lerobot": (8, 10),
    "robomind-franka": (8, 10),
    "galbot": (9, 30),
    "robomind-franka-dual": (12, 20),
    "robomind-ur": (13, 10),
    "agibotworld": (15, 29),
    "fractal": (20, 10),
}


def test_builtins_have_published_domain_ids_and_widths():
    for name, (domain_id, width) in PUBLISHED.items():
        emb = get_embodiment(name)
        assert (emb.domain_id, emb.action_dim) == (domain_id, width), name


def test_builtins_match_reference_tables():
    from diffusers.pipelines.cosmos import pipeline_cosmos3_omni as ref

    for name in DEFAULT_EMBODIMENTS.names():
        emb = DEFAULT_EMBODIMENTS.get(name)
        assert ref._EMBODIMENT_TO_DOMAIN_ID[name] == emb.domain_id
        assert ref._EMBODIMENT_TO_RAW_ACTION_DIM[name] == emb.action_dim
    assert set(ref._EMBODIMENT_TO_RAW_ACTION_DIM) == set(DEFAULT_EMBODIMENTS.names())


def test_unknown_and_libero_errors():
    with pytest.raises(KeyError, match=r"known embodiments: .*bridge_orig_lerobot"):
        DEFAULT_EMBODIMENTS.get("no_such_robot")
    with pytest.raises(UnknownEmbodimentError, match="unknown embodiment"):
        get_embodiment("no_such_robot")
    with pytest.raises(ValueError, match="register it with"):
        get_embodiment("libero")
    assert "libero" not in DEFAULT_EMBODIMENTS


def test_registry_register_overwrite_rules():
    registry = EmbodimentRegistry(DEFAULT_EMBODIMENTS)
    assert registry.names() == DEFAULT_EMBODIMENTS.names()
    libero = Embodiment(name="libero", domain_id=5, action_dim=7)
    registry.register(libero)
    assert "libero" in registry and "libero" not in DEFAULT_EMBODIMENTS
    registry.register(Embodiment(name="libero", domain_id=5, action_dim=7))  # identical: no-op
    with pytest.raises(ValueError, match="overwrite=True"):
        registry.register(Embodiment(name="libero", domain_id=5, action_dim=8))
    registry.register(Embodiment(name="libero", domain_id=5, action_dim=8), overwrite=True)
    assert registry.get("libero").action_dim == 8
    with pytest.raises(TypeError):
        registry.register("libero")


def test_register_embodiment_in_default_registry(monkeypatch):
    monkeypatch.setattr(embodiments, "DEFAULT_EMBODIMENTS", EmbodimentRegistry(DEFAULT_EMBODIMENTS))
    emb = register_embodiment(name="libero", domain_id=5, action_dim=7, control_hz=10)
    assert get_embodiment("libero") is emb and emb.control_hz == 10.0
    assert get_embodiment(emb) is emb
    assert "libero" not in DEFAULT_EMBODIMENTS
    with pytest.raises(TypeError):
        register_embodiment(emb, name="x")
    with pytest.raises(TypeError, match="unknown Embodiment fields"):
        register_embodiment(name="x", domain_id=5, action_dim=7, width=3)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(name="", domain_id=1, action_dim=2), "name"),
        (dict(name="a", domain_id=32, action_dim=2), "domain_id"),
        (dict(name="a", domain_id=True, action_dim=2), "domain_id"),
        (dict(name="a", domain_id=1, action_dim=0), "action_dim"),
        (dict(name="a", domain_id=1, action_dim=2, control_hz=0.0), "control_hz"),
        (dict(name="a", domain_id=1, action_dim=2, view_point="top"), "view_point"),
        (dict(name="a", domain_id=1, action_dim=2, action_low=(0.0, 0.0)), "both"),
        (dict(name="a", domain_id=1, action_dim=2, action_low=(0.0,), action_high=(1.0,)), "action_low"),
        (dict(name="a", domain_id=1, action_dim=2, action_low=(0, 1), action_high=(1, 0)), r"dimensions \[1\]"),
        (dict(name="a", domain_id=1, action_dim=2, action_low=(0, np.nan), action_high=(1, 1)), "finite"),
    ],
)
def test_embodiment_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Embodiment(**kwargs)


def test_embodiment_stats_become_float_tuples():
    emb = Embodiment(name="a", domain_id=1, action_dim=2, action_low=[0, -1], action_high=np.array([1.0, 1.0]))
    assert emb.action_low == (0.0, -1.0) and emb.action_high == (1.0, 1.0)
    assert all(type(v) is float for v in emb.action_low + emb.action_high)
    hash(emb)


def test_prepare_actions_pads_without_stats():
    raw = np.arange(20, dtype=np.float64).reshape(2, 10)
    out = prepare_actions(raw, "bridge_orig_lerobot", action_dim=16, chunk_size=2)
    assert out.dtype == torch.float32 and out.shape == (2, 16)
    assert torch.equal(out[:, :10], torch.from_numpy(raw).float())
    assert torch.count_nonzero(out[:, 10:]) == 0
    ints = prepare_actions([[1, 2]], "pusht", action_dim=4)
    assert ints.tolist() == [[1.0, 2.0, 0.0, 0.0]]


def test_prepare_actions_normalises_and_clips():
    emb = Embodiment(name="arm", domain_id=5, action_dim=3, action_low=(0, -2, 1), action_high=(10, 2, 1))
    out = prepare_actions(torch.tensor([[0.0, 0.0, 5.0], [10.0, 4.0, 1.0], [5.0, -9.0, 1.0]]), emb, action_dim=4)
    expected = [[-1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0], [0.0, -1.0, 0.0, 0.0]]
    assert torch.allclose(out, torch.tensor(expected))


def test_normalise_round_trip():
    rng = np.random.default_rng(0)
    low, high = rng.uniform(-3, 0, 10), rng.uniform(0.5, 3, 10)
    emb = Embodiment(name="arm", domain_id=7, action_dim=10, action_low=low, action_high=high)
    raw = rng.uniform(low, high, size=(8, 10)).astype(np.float32)
    model_space = prepare_actions(raw, emb, action_dim=32)
    back = unnormalize_actions(model_space, emb)
    assert back.shape == (8, 10) and back.dtype == np.float32
    np.testing.assert_allclose(back, raw, atol=1e-5)
    plain = unnormalize_actions(prepare_actions(raw, "fractal", action_dim=16), "fractal")
    np.testing.assert_array_equal(plain, raw)


@pytest.mark.parametrize(
    "actions, match",
    [
        (np.zeros((4, 9)), r"actions must have shape \[4, 10\] .*droid_lerobot.*got \(4, 9\)"),
        (np.zeros((0, 10)), r"actions must have shape"),
        (np.zeros((3, 10)), r"actions must have shape \[4, 10\]"),
        (np.zeros(10), "actions must be a rank-2"),
        (np.zeros((1, 4, 10)), "actions must be a rank-2"),
        (np.zeros((4, 10), dtype=bool), "actions must have a real floating or integer dtype"),
        (np.zeros((4, 10), dtype=np.complex64), "actions must have a real floating or integer dtype"),
        (np.zeros((4, 10), dtype=object), "actions must have a real floating or integer dtype"),
        (torch.zeros(4, 10, dtype=torch.bool), "actions must have a real floating or integer dtype"),
        ([[1.0, 2.0], [3.0]], "actions must be a"),
        ([["a"] * 10] * 4, "actions must have a real floating or integer dtype"),
        (np.full((4, 10), np.nan), "actions must be finite"),
        (np.full((4, 10), np.inf), "actions must be finite"),
    ],
)
def test_prepare_actions_rejects_bad_input_without_mutating_it(actions, match):
    before = actions.copy() if isinstance(actions, np.ndarray) else None
    with pytest.raises(ValueError, match=match):
        prepare_actions(actions, "droid_lerobot", action_dim=16, chunk_size=4)
    if before is not None:
        np.testing.assert_array_equal(actions, before)


def test_prepare_actions_rejects_bad_sizes():
    with pytest.raises(ValueError, match="action_dim=16"):
        prepare_actions(np.zeros((2, 57)), "hand_pose", action_dim=16)
    with pytest.raises(ValueError, match="action_dim must be"):
        prepare_actions(np.zeros((2, 2)), "pusht", action_dim=0)
    with pytest.raises(ValueError, match="chunk_size must be"):
        prepare_actions(np.zeros((2, 2)), "pusht", action_dim=4, chunk_size=0)


def test_prepare_and_unnormalize_leave_inputs_unchanged():
    emb = Embodiment(name="arm", domain_id=5, action_dim=2, action_low=(-1, -1), action_high=(3, 3))
    raw = np.array([[5.0, -4.0], [1.0, 2.0]])
    tensor = torch.tensor(raw, dtype=torch.float32)
    raw_copy, tensor_copy = raw.copy(), tensor.clone()
    out = prepare_actions(raw, emb, action_dim=2)
    prepare_actions(tensor, emb, action_dim=2)
    back = unnormalize_actions(out, emb)
    back[:] = 0
    np.testing.assert_array_equal(raw, raw_copy)
    assert torch.equal(tensor, tensor_copy)
    assert torch.count_nonzero(out) > 0
    unnormalize_actions(tensor, emb)
    assert torch.equal(tensor, tensor_copy)


def test_unnormalize_validates_width():
    with pytest.raises(ValueError, match="at least 29 columns"):
        unnormalize_actions(torch.zeros(3, 20), "agibotworld")
    assert unnormalize_actions(torch.ones(3, 32), "agibotworld").shape == (3, 29)
