"""Gymnasium environments backed by the Cosmos3 world model."""
