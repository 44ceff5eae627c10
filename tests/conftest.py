"""Shared fixtures: tiny bundles in the published layout, built once per test session."""

import pytest

from cosmos3_world.testing.tiny import build_tiny_bundle


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    """Space-to-depth codec (64x64 frames, temporal factor 1)."""
    return build_tiny_bundle(tmp_path_factory.mktemp("tiny_s2d"), codec="space_to_depth", seed=0)


@pytest.fixture(scope="session")
def wan_bundle(tmp_path_factory):
    """A small real Wan 2.2 VAE (16x spatial, 4x temporal)."""
    return build_tiny_bundle(tmp_path_factory.mktemp("tiny_wan"), codec="wan", seed=1)
