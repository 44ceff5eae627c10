"""Shared fixtures: tiny bundles in the published layout, built once per test session.

Tests run torch on one thread (subprocesses too, through OMP_NUM_THREADS): the models are tiny, and on a
busy 2-core machine two OpenMP threads that wait for each other make small forwards many times slower.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

from cosmos3_world.testing.tiny import build_tiny_bundle  # noqa: E402


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    """Space-to-depth codec (64x64 frames, temporal factor 1)."""
    return build_tiny_bundle(tmp_path_factory.mktemp("tiny_s2d"), codec="space_to_depth", seed=0)


@pytest.fixture(scope="session")
def wan_bundle(tmp_path_factory):
    """A small real Wan 2.2 VAE (16x spatial, 4x temporal)."""
    return build_tiny_bundle(tmp_path_factory.mktemp("tiny_wan"), codec="wan", seed=1)
