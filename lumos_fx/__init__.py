"""lumos_fx: L0-gated feature selection and structured pruning for any traceable model.

Example::

    >>> import torch
    >>> import lumos_fx as lumos
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> gated = lumos.compile(model, example_inputs=(torch.randn(16, 4),))
    >>> loss = gated(torch.randn(16, 4)).pow(2).mean() + lumos.penalty(gated)
    >>> pruned = lumos.extract(gated.eval())
"""
from .api import compile, expected_cost, extract, gates, penalty
from .budget import Budget, BudgetStatus, budget_status
from .deploy import Deployment, deploy
from .deployed import DeployedModel
from .feature_selection import FeatureSelection, select_features
from .errors import ExactnessError, InputError, LumosError, TraceError
from .gate_init import init_gates_from_magnitude
from .gates import GateConfig, HardConcreteGate
from .report import Report, report
from .monitor import TrainingMonitor
from .training import fit, param_groups
from .verify import verify

__all__ = [
    "compile", "gates", "penalty", "extract", "report", "verify", "expected_cost",
    "init_gates_from_magnitude", "select_features", "FeatureSelection",
    "deploy", "Deployment", "DeployedModel",
    "Budget", "BudgetStatus", "budget_status", "param_groups", "fit", "TrainingMonitor",
    "GateConfig", "HardConcreteGate", "Report",
    "LumosError", "TraceError", "InputError", "ExactnessError",
]
__version__ = "0.1.0"
