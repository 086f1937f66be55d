"""Backbones: architecture only."""
