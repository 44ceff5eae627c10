"""cosmos3-world: NVIDIA's Cosmos3 world model as a robot simulator."""

__version__ = "0.1.0"
