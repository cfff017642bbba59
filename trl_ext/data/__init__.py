"""Datasets, collators, samplers and task generators."""
