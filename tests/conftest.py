"""Shared test settings.

The test models are tiny: one intra-op thread is the fastest setting for them and
keeps timings stable when ``pytest -n 2`` runs two workers on two cores.
"""
import torch

torch.set_num_threads(1)
