"""Channel rules per aten op family, registered as data in :data:`REGISTRY`.

Importing this package registers every rule module. Add an op by adding a
rule (or a rule file) here; no pass needs to change.
"""
from .registry import REGISTRY, RuleRegistry
from . import einsum, elementwise, layers, norm, pad, reduce, shape, spectral  # noqa: F401

__all__ = ["REGISTRY", "RuleRegistry"]
