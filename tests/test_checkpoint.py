"""Saving and loading the generator in the published layout, and the errors bad checkpoints give."""

import json
import shutil
import warnings

import pytest
import torch
from diffusers import Cosmos3OmniTransformer

from cosmos3_world import Cosmos3Config, Cosmos3Generator
from cosmos3_world.model.checkpoint import CheckpointError
from cosmos3_world.testing.reference import model_pair


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A sharded checkpoint (bundle layout: <root>/transformer/...) and the model that wrote it."""
    ours, _ = model_pair(seed=11)
    root = tmp_path_factory.mktemp("bundle")
    ours.save_pretrained(root / "transformer", max_shard_size="200KB")
    return root, ours


def copy_bundle(saved, tmp_path):
    root, _ = saved
    shutil.copytree(root, tmp_path / "b")
    return tmp_path / "b", tmp_path / "b" / "transformer"


def test_sharded_round_trip_is_exact(saved):
    root, ours = saved
    files = sorted(p.name for p in (root / "transformer").iterdir())
    assert "diffusion_pytorch_model.safetensors.index.json" in files
    assert sum(f.endswith(".safetensors") for f in files) > 2
    loaded = Cosmos3Generator.from_pretrained(root)
    for k, v in ours.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    assert not any(p.is_meta for p in loaded.parameters())


def test_diffusers_reads_our_checkpoint_and_we_read_theirs(saved, tmp_path):
    root, ours = saved
    ref = Cosmos3OmniTransformer.from_pretrained(root, subfolder="transformer")
    for k, v in ours.state_dict().items():
        assert torch.equal(v, ref.state_dict()[k]), k
    ref.save_pretrained(tmp_path / "theirs")
    back = Cosmos3Generator.from_pretrained(tmp_path / "theirs", subfolder=None)
    for k, v in ref.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]), k


def test_dtype_and_device_on_load(saved):
    root, ours = saved
    m = Cosmos3Generator.from_pretrained(root, torch_dtype=torch.bfloat16, device="cpu")
    assert m.dtype == torch.bfloat16
    assert m.time_embedder.linear_1.weight.dtype == torch.float32  # kept in float32 like the reference
    assert torch.equal(m.layers[0].mlp.up_proj.weight, ours.layers[0].mlp.up_proj.weight.bfloat16())
    assert Cosmos3Generator.from_pretrained(root, torch_dtype="auto").dtype == torch.float32


def test_offline_hub_path_reads_the_hf_cache(saved, tmp_path, monkeypatch):
    root, ours = saved
    cache = tmp_path / "hub"
    repo = cache / "models--nvidia--Cosmos3-Tiny"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(root, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    m = Cosmos3Generator.from_pretrained("nvidia/Cosmos3-Tiny", cache_dir=cache)
    assert torch.equal(m.proj_in.weight, ours.proj_in.weight)
    with pytest.raises(CheckpointError, match="nvidia/Missing.*offline"):
        Cosmos3Generator.from_pretrained("nvidia/Missing", cache_dir=cache)


def test_missing_and_unexpected_keys_are_named(saved, tmp_path):
    from safetensors.torch import load_file, save_file

    _, folder = copy_bundle(saved, tmp_path)
    index = json.loads((folder / "diffusion_pytorch_model.safetensors.index.json").read_text())
    shard = folder / index["weight_map"]["proj_in.weight"]
    tensors = load_file(shard)
    tensors["layers.9.mlp.up_proj.weight"] = tensors.pop("proj_in.weight")
    save_file(tensors, shard)
    index["weight_map"]["layers.9.mlp.up_proj.weight"] = index["weight_map"].pop("proj_in.weight")
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError) as e:
        Cosmos3Generator.from_pretrained(folder, subfolder=None)
    msg = str(e.value)
    assert "Missing keys (1): ['proj_in.weight']" in msg
    assert "Unexpected keys (1): ['layers.9.mlp.up_proj.weight']" in msg
    assert "10 layers but num_hidden_layers=2" in msg


def test_config_contradicting_the_weights(saved, tmp_path):
    _, folder = copy_bundle(saved, tmp_path)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["intermediate_size"] = 128
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"has shape \[96, 64\] but config.json .*intermediate_size=128"):
        Cosmos3Generator.from_pretrained(folder, subfolder=None)


def test_truncated_and_corrupted_files_name_the_file(saved, tmp_path):
    _, folder = copy_bundle(saved, tmp_path)
    shard = sorted(folder.glob("*-00002-of-*.safetensors"))[0]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=f"{shard.name}.*(corrupted or truncated)"):
        Cosmos3Generator.from_pretrained(folder, subfolder=None)
    shard.write_bytes(b"\xff" * 64 + data[64:])
    with pytest.raises(CheckpointError, match=f"{shard.name}.*corrupted or truncated"):
        Cosmos3Generator.from_pretrained(folder, subfolder=None)
    shard.unlink()
    with pytest.raises(CheckpointError, match=f"shard files that do not exist.*{shard.name}"):
        Cosmos3Generator.from_pretrained(folder, subfolder=None)


def test_missing_files_and_folders(saved, tmp_path):
    root, folder = copy_bundle(saved, tmp_path)
    with pytest.raises(CheckpointError, match="no 'vae' subfolder"):
        Cosmos3Generator.from_pretrained(root, subfolder="vae")
    (folder / "config.json").unlink()
    with pytest.raises(CheckpointError, match="no config.json"):
        Cosmos3Generator.from_pretrained(root)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text(
        json.dumps(
            {
                "hidden_size": 64,
                "num_hidden_layers": 1,
                "head_dim": 16,
                "num_attention_heads": 4,
                "num_key_value_heads": 2,
                "rope_axes_dim": [4, 2, 2],
            }
        )
    )
    with pytest.raises(CheckpointError, match="no diffusion_pytorch_model.safetensors"):
        Cosmos3Generator.from_pretrained(empty, subfolder=None)


def test_config_unknown_fields_warn_and_contradictions_raise():
    base = dict(
        hidden_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        rope_axes_dim=[4, 2, 2],
    )
    with pytest.warns(UserWarning, match="new_field"):
        cfg = Cosmos3Config.from_dict({**base, "new_field": 1, "_class_name": "Cosmos3OmniTransformer"})
    assert cfg.extra == {"new_field": 1} and cfg.to_dict()["new_field"] == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Cosmos3Config.from_dict({**base, "_diffusers_version": "0.42.1", "dtype": "bfloat16"})
    bad = {
        "num_key_value_heads": (3, "multiple of num_key_value_heads"),
        "hidden_act": ("gelu", "hidden_act must be"),
        "patch_latent_dim": (100, "patch_latent_dim"),
        "action_gen": (True, "action_gen=True requires"),
        "rope_scaling": ({"mrope_section": [2, 3, 3]}, "contradicts rope_scaling"),
    }
    for key, (value, message) in bad.items():
        with pytest.raises(ValueError, match=message):
            Cosmos3Config.from_dict({**base, key: value})


LOAD_AND_REPORT_PEAK = """
import sys
from cosmos3_world import Cosmos3Generator

def status(key):  # bytes, from /proc/self/status
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith(key))

open("/proc/self/clear_refs", "w").write("5")  # reset the peak-RSS mark to the current RSS
base = status("VmRSS")
model = Cosmos3Generator.from_pretrained(sys.argv[1], subfolder=None)
print(status("VmHWM") - base, sum(p.numel() * p.element_size() for p in model.parameters()))
"""


def test_loading_does_not_hold_the_weights_twice(tmp_path):
    """Peak memory while loading a sharded checkpoint stays near one copy of the weights (meta-device
    init + reading each tensor straight into place), not the two copies of init-then-load_state_dict."""
    import subprocess
    import sys

    cfg = Cosmos3Config.from_dict(
        dict(
            hidden_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=32,
            intermediate_size=256,
            rope_axes_dim=[6, 5, 5],
            vocab_size=151936,
        )
    )
    Cosmos3Generator(cfg).save_pretrained(tmp_path, max_shard_size="20MB")
    out = subprocess.run(
        [sys.executable, "-c", LOAD_AND_REPORT_PEAK, str(tmp_path)], capture_output=True, text=True, check=True
    )
    peak, size = map(int, out.stdout.split())
    assert size > 150e6
    assert peak < 1.35 * size, f"peak {peak / 1e6:.0f} MB for {size / 1e6:.0f} MB of weights"
