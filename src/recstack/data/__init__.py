"""Canonical data layer: sources, preparation, splits, jagged sequences."""
