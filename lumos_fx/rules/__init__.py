"""Channel rules per aten op family, registered as data in :data:`REGISTRY`.

Importing this package registers every rule module. Add an op by adding a
rule (or a rule file) here; no pass needs to change.
"""
from .registry import REGISTRY, RuleRegistry
from . import (along_dim, attention, concat, einsum, elementwise, factory,  # noqa: F401
               gather, grouped_mm, heads, layers, norm, pad, recurrent, reduce, scatter,
               shape, spectral)

__all__ = ["REGISTRY", "RuleRegistry"]
