"""The offline proxy workloads, in the paper's Table II order (FC/CNN ones, then the GNNs and the ViT).

``ALL`` maps a workload name to its module name; modules are imported lazily so that a
workload whose optional dependency is missing cannot break the others.
"""
from __future__ import annotations

import importlib

ALL = {
    "cfd": "cfd", "fluid": "fluid", "puremd": "puremd", "cosmoflow": "cosmoflow",
    "em_denoise": "em_denoise", "synthetic": "synthetic", "optical": "optical", "dms": "dms",
    "stemdl": "stemdl", "slstr": "slstr", "ppa": "ppa", "molhiv": "molhiv",
    "braintumor": "braintumor",
}
PRIORITY = {1: ["cfd", "fluid", "puremd", "synthetic"], 2: ["cosmoflow", "dms", "slstr"],
            3: ["em_denoise", "optical", "stemdl"], 4: ["ppa", "molhiv", "braintumor"]}


def load(name: str):
    return importlib.import_module(f"{__name__}.{ALL[name]}")
