"""Kedro datasets of the project: handles to the episode store and feature cache, torch models as safetensors."""
