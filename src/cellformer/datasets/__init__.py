"""Synthetic and example data sets."""
