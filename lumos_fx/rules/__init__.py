"""Channel rules per op, registered as data in :data:`REGISTRY`.

Importing this package registers every rule module. Add a layer type by
adding a rule file here; no pass needs to change.
"""
from .registry import REGISTRY, RuleRegistry
from . import elementwise, layers, norm, pad, reduce, shape  # noqa: F401  (registration)
from .layers import SIZE_ATTRIBUTES as _LAYER_SIZES
from .norm import NORM_SIZE_ATTRIBUTES as _NORM_SIZES

SIZE_ATTRIBUTES = {**_LAYER_SIZES, **_NORM_SIZES}

__all__ = ["REGISTRY", "RuleRegistry", "SIZE_ATTRIBUTES"]
