"""An analytic model of a systolic-array accelerator, dense or with attention skipping (``diffprobe accel``).

Presets are TOML files in ``accelerators/`` (or a user's file by path), each number with its source. The model:

* **GEMM** ``(M x K) @ (K x N)`` on an ``rows x cols`` array, SCALE-Sim's mapping (M: output rows / pixels,
  K: reduction, N: output columns / filters):

  ============  ==========  ==========  ========  ==================================
  dataflow      array rows  array cols  streamed  cycles per fold
  ============  ==========  ==========  ========  ==================================
  ``os``        M           N           K         K + rows + cols - 2
  ``ws``        K           N           M         M + 2 rows + cols - 2 (weights load)
  ``is``        K           M           N         N + 2 rows + cols - 2 (inputs load)
  ============  ==========  ==========  ========  ==================================

  folds = ceil(mapped rows / rows) x ceil(mapped cols / cols); a partial (edge) fold takes a full fold's cycles,
  which is where utilization below 1 comes from. Operands enter skewed, one row or column per cycle, and folds
  run back to back.
* **Traffic.** SRAM: every operand element the array reads per fold, and each fold's outputs (partial sums
  written and read back between reduction folds). DRAM: an operand that fits its buffer is read once; one that
  does not is read as often as the array reads it; outputs are written once if the partial sums fit the output
  buffer, else spilled per reduction fold.
* **Overlap rule.** Double-buffered: a GEMM takes ``max(compute cycles, DRAM bytes / bytes per cycle)``.
* **Vector unit** (softmax, norms, activations, elementwise): ``ceil(ops / lanes)`` cycles, its operands streamed
  from DRAM (no fusion assumed), the same overlap rule.
* **Energy** = MACs x energy per MAC + vector ops x energy per op + SRAM bytes x energy per SRAM byte + DRAM bytes x
  energy per DRAM byte.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import NamedTuple

from diffprobe.errors import DiffprobeError
from diffprobe.hardware.preset import read_toml

DATAFLOWS = ("os", "ws", "is")
GRANULARITIES = ("none", "block", "row", "element")


@dataclass(frozen=True)
class AccelPreset:
    """One accelerator design (see the module docstring); ``granularity`` says what its attention unit skips."""

    name: str
    title: str
    rows: int
    cols: int
    dataflow: str
    clock_hz: float
    bytes_per_element: int
    sram_ifmap_bytes: int
    sram_filter_bytes: int
    sram_ofmap_bytes: int
    dram_bandwidth: float  # bytes/s
    vector_lanes: int
    energy_mac_j: float
    energy_vector_op_j: float
    energy_sram_byte_j: float
    energy_dram_byte_j: float
    granularity: str = "none"
    block: int = 0  # block: the key/query block side it skips
    element_efficiency: float = 1.0  # element: fraction of the dense MAC rate on kept entries
    index_bytes: int = 0  # element: index bytes per kept entry
    sources: dict = field(default_factory=dict, compare=False)

    @property
    def dram_bytes_per_cycle(self) -> float:
        return self.dram_bandwidth / self.clock_hz

    def dense(self) -> "AccelPreset":
        """The same design without attention skipping (the baseline a sparse design is compared with)."""
        from dataclasses import replace

        return replace(self, name=f"{self.name} (dense)" if self.granularity != "none" else self.name,
                       granularity="none", block=0, element_efficiency=1.0, index_bytes=0)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


_REQUIRED = ("name", "title", "rows", "cols", "dataflow", "clock_hz", "bytes_per_element", "sram_ifmap_bytes",
             "sram_filter_bytes", "sram_ofmap_bytes", "dram_bandwidth", "vector_lanes", "energy_mac_j",
             "energy_vector_op_j", "energy_sram_byte_j", "energy_dram_byte_j")


def accel_from_dict(data: dict, where: str = "preset") -> AccelPreset:
    """An :class:`AccelPreset` from a parsed TOML table; every missing or wrong field is refused with one line."""
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise DiffprobeError(f"accelerator preset {where} lacks {', '.join(missing)}")
    sparse = data.get("sparse") or {}
    values = {k: data[k] for k in _REQUIRED}
    values.update({"granularity": sparse.get("granularity", "none"), "block": sparse.get("block", 0),
                   "element_efficiency": sparse.get("element_efficiency", 1.0),
                   "index_bytes": sparse.get("index_bytes", 0), "sources": dict(data.get("sources") or {})})
    for k in _REQUIRED[2:]:
        if k == "dataflow":
            continue
        v = values[k]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise DiffprobeError(f"accelerator preset {where}: {k} must be a positive number, got {v!r}")
    for k in ("rows", "cols", "bytes_per_element", "vector_lanes", "sram_ifmap_bytes", "sram_filter_bytes",
              "sram_ofmap_bytes"):
        values[k] = int(values[k])
    if values["dataflow"] not in DATAFLOWS:
        raise DiffprobeError(f"accelerator preset {where}: dataflow must be one of {', '.join(DATAFLOWS)}, got "
                             f"{values['dataflow']!r}")
    if values["granularity"] not in GRANULARITIES:
        raise DiffprobeError(f"accelerator preset {where}: sparse.granularity must be one of "
                             f"{', '.join(GRANULARITIES)}, got {values['granularity']!r}")
    if values["granularity"] == "block" and (not isinstance(values["block"], int) or values["block"] <= 0):
        raise DiffprobeError(f"accelerator preset {where}: sparse.block must be a positive number of tokens")
    if not 0 < values["element_efficiency"] <= 1:
        raise DiffprobeError(f"accelerator preset {where}: sparse.element_efficiency must be in (0, 1]")
    return AccelPreset(**values)


def _builtin() -> dict[str, Path]:
    folder = resources.files("diffprobe.hardware") / "accelerators"
    out = {}
    for entry in folder.iterdir():
        if entry.name.endswith(".toml"):
            out[entry.name[:-5].lower()] = Path(str(entry))
    return out


def list_accels() -> list[str]:
    return sorted(_builtin())


def get_accel(name: str) -> AccelPreset:
    """A built-in accelerator preset by name, or a TOML file by path."""
    files = _builtin()
    path = files.get(name.lower())
    if path is None:
        if not (name.endswith(".toml") or "/" in name):
            raise DiffprobeError(f"unknown accelerator preset {name!r}; use one of {', '.join(list_accels())} or a "
                                 "path to a .toml file")
        path = Path(name)
    return accel_from_dict(read_toml(path, "accelerator preset"), str(path))


class Cost(NamedTuple):
    """What some work costs on a design: operations, cycles (compute, memory, and the overlapped total), traffic
    per memory level and energy by component. Costs add with :func:`total`."""

    macs: int = 0
    vector_ops: int = 0
    compute_cycles: float = 0.0
    memory_cycles: float = 0.0
    cycles: float = 0.0
    array_cycles: float = 0.0  # cycles the MAC array is occupied (for its utilization)
    sram_bytes: float = 0.0
    dram_bytes: float = 0.0
    energy_mac_j: float = 0.0
    energy_vector_j: float = 0.0
    energy_sram_j: float = 0.0
    energy_dram_j: float = 0.0

    @property
    def energy_j(self) -> float:
        return self.energy_mac_j + self.energy_vector_j + self.energy_sram_j + self.energy_dram_j

    def scaled(self, n: float) -> "Cost":
        return Cost(*(v * n for v in self))


def total(costs) -> Cost:
    out = [0.0] * len(Cost._fields)
    for c in costs:
        for i, v in enumerate(c):
            out[i] += v
    return Cost(*out)


def _finish(p: AccelPreset, macs, vops, compute, array, sram_el, dram_bytes, extra_sram_bytes=0.0) -> Cost:
    sram = sram_el * p.bytes_per_element + extra_sram_bytes
    memory = dram_bytes / p.dram_bytes_per_cycle
    return Cost(macs, vops, compute, memory, max(compute, memory), array, sram, dram_bytes, macs * p.energy_mac_j,
                vops * p.energy_vector_op_j, sram * p.energy_sram_byte_j, dram_bytes * p.energy_dram_byte_j)


class GemmMapping(NamedTuple):
    """How one GEMM maps onto the array (see the module docstring's table)."""

    mapped_rows: int
    mapped_cols: int
    streamed: int
    folds: int
    cycles_per_fold: int
    reduction_folds: int  # folds along K (partial sums go back to the output buffer between them)


def mapping(m: int, k: int, n: int, rows: int, cols: int, dataflow: str) -> GemmMapping:
    if dataflow == "os":
        sr, sc, t, per = m, n, k, k + rows + cols - 2
        red = 1
    elif dataflow == "ws":
        sr, sc, t, per = k, n, m, m + 2 * rows + cols - 2
        red = math.ceil(k / rows)
    elif dataflow == "is":
        sr, sc, t, per = k, m, n, n + 2 * rows + cols - 2
        red = math.ceil(k / rows)
    else:
        raise DiffprobeError(f"unknown dataflow {dataflow!r}; use one of {', '.join(DATAFLOWS)}")
    folds = math.ceil(sr / rows) * math.ceil(sc / cols)
    return GemmMapping(sr, sc, t, folds, per, red)


def gemm(m: int, k: int, n: int, p: AccelPreset, count: int = 1, ifmap_unique: int | None = None,
         rate: float = 1.0) -> Cost:
    """``count`` independent ``(m x k) @ (k x n)`` GEMMs on design ``p`` (see the module docstring).
    ``ifmap_unique``: the input's distinct elements when the m x k matrix repeats them (a convolution's im2col);
    ``rate``: the fraction of the array's MAC rate achieved (an element-sparse unit's efficiency)."""
    if min(m, k, n, count) <= 0:
        return Cost()
    mp = mapping(m, k, n, p.rows, p.cols, p.dataflow)
    compute = mp.folds * mp.cycles_per_fold / rate
    if p.dataflow == "os":
        reads_if, reads_f = m * k * math.ceil(n / p.cols), k * n * math.ceil(m / p.rows)
        psum = m * n
    elif p.dataflow == "ws":
        reads_if, reads_f = m * k * math.ceil(n / p.cols), k * n
        psum = m * n * (2 * mp.reduction_folds - 1)  # written every K fold, read back before all but the first
    else:
        reads_if, reads_f = m * k, k * n * math.ceil(m / p.cols)
        psum = m * n * (2 * mp.reduction_folds - 1)
    b = p.bytes_per_element
    if_size = (ifmap_unique if ifmap_unique is not None else m * k) * b
    dram = if_size if if_size <= p.sram_ifmap_bytes else reads_if * b
    dram += k * n * b if k * n * b <= p.sram_filter_bytes else reads_f * b
    dram += m * n * b if m * n * b <= p.sram_ofmap_bytes else psum * b
    one = _finish(p, m * k * n, 0, compute, compute, reads_if + reads_f + psum, dram)
    return one.scaled(count) if count != 1 else one


def vector(ops: int, nbytes: int, p: AccelPreset) -> Cost:
    """Work on the vector unit: ``ops`` element operations, ``nbytes`` streamed from and to DRAM."""
    if ops <= 0 and nbytes <= 0:
        return Cost()
    compute = math.ceil(max(ops, 0) / p.vector_lanes)
    return _finish(p, 0, max(ops, 0), compute, 0.0, 0, max(nbytes, 0), extra_sram_bytes=max(nbytes, 0))
