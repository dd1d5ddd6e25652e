"""Channel rules per aten op family, registered as data in :data:`REGISTRY`.

Importing this package registers every rule module. Add an op by adding a
rule (or a rule file) here; no pass needs to change.
"""
from .registry import REGISTRY, RuleRegistry
from . import (along_dim, attention, einsum, elementwise, factory, gather, grouped_mm,  # noqa: F401
               heads, layers, norm, pad, recurrent, reduce, scatter, shape, spectral)

__all__ = ["REGISTRY", "RuleRegistry"]
