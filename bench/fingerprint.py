"""The machine a record was measured on, as far as speed and results depend on it.

CPU model, its features (the kernels torch dispatches to), the core count, the GPU, torch's and CUDA's
versions: two records with the same fingerprint ran on interchangeable machines. The host name is not part
of it (it changes on every CI runner while the hardware does not), nor the thread count (a cell's timing
threads are in its identity).
"""
from __future__ import annotations

import hashlib
import math
from typing import Mapping, Tuple

__all__ = ["machine_fingerprint", "row_fingerprint", "FINGERPRINT"]

FINGERPRINT = ("cpu_name", "cpu_features", "cpu_count", "device_name", "torch_version", "cuda_version")


def _plain(v):
    """2.0 (a count read back from a CSV column) is 2, so a store and its results.csv fingerprint alike."""
    return int(v) if isinstance(v, float) and v.is_integer() else v


def _missing(v) -> bool:
    return v is None or v == "" or (isinstance(v, float) and math.isnan(v))


def machine_fingerprint(env: Mapping) -> Tuple[str, str]:
    """(12-hex id, readable description) of the machine a record's `env` describes; ("", "") when the record
    says nothing of its machine (written before records carried it)."""
    text = "; ".join(f"{k}={_plain(env.get(k))}" for k in FINGERPRINT if not _missing(env.get(k)))
    return (hashlib.sha256(text.encode()).hexdigest()[:12] if text else ""), text


def row_fingerprint(row: Mapping) -> Tuple[str, str]:
    """The same for a flattened row of a results frame (`env_<field>` columns)."""
    return machine_fingerprint({k: row.get(f"env_{k}") for k in FINGERPRINT})
