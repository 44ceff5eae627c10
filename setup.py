"""Package discovery only (metadata lives in pyproject.toml): `envs/` and `policies/` install as
`cosmos3_world.envs` and `cosmos3_world.policies`, and every subpackage of the three trees is
found automatically, so a new one always ships in the wheel."""

from setuptools import find_packages, setup

ROOTS = {"cosmos3_world": "cosmos3_world", "cosmos3_world.envs": "envs", "cosmos3_world.policies": "policies"}


def _tree(name: str, directory: str) -> list[str]:
    return [name, *(f"{name}.{sub}" for sub in find_packages(directory))]


setup(
    package_dir=ROOTS,
    packages=[pkg for name, directory in ROOTS.items() for pkg in _tree(name, directory)],
    package_data={"cosmos3_world": ["assets/**/*", "py.typed"]},
)
