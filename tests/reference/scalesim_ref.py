"""SCALE-Sim v3 (PyPI ``scalesim``) as an independent reference for the accelerator model's GEMM cycles.

SCALE-Sim needs numpy < 2 (its buffers fail under numpy 2, see docs/accelerator.md), so it runs in a venv of its own,
made on first use under ``$DIFFPROBE_CACHE`` (default ``~/.cache/diffprobe``) and reused. ``cycles(gemms)`` runs
every ``(m, n, k, rows, cols, dataflow)`` in one SCALE-Sim process and returns its "Total Cycles" per GEMM.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

SCRIPT = r'''
import csv, glob, json, sys, tempfile
from scalesim.scale_sim import scalesim
CFG = """[general]
run_name = t
[architecture_presets]
ArrayHeight: {rows}
ArrayWidth: {cols}
IfmapSramSzkB: 1024
FilterSramSzkB: 1024
OfmapSramSzkB: 1024
IfmapOffset: 0
FilterOffset: 10000000
OfmapOffset: 20000000
Bandwidth: 10
Dataflow: {df}
MemoryBanks: 1
ReadRequestBuffer: 32
WriteRequestBuffer: 32
[layout]
IfmapCustomLayout: False
IfmapSRAMBankBandwidth: 10
IfmapSRAMBankNum: 10
IfmapSRAMBankPort: 2
FilterCustomLayout: False
FilterSRAMBankBandwidth: 10
FilterSRAMBankNum: 10
FilterSRAMBankPort: 2
[sparsity]
SparsitySupport: false
SparseRep: ellpack_block
OptimizedMapping: false
BlockSize: 8
RandomNumberGeneratorSeed: 40
[run_presets]
InterfaceBandwidth: CALC
UseRamulatorTrace: False
"""
out = []
for m, n, k, rows, cols, df in json.loads(sys.argv[1]):
    d = tempfile.mkdtemp()
    open(f"{d}/c.cfg", "w").write(CFG.format(rows=rows, cols=cols, df=df))
    open(f"{d}/t.csv", "w").write(f"Layer, M, N, K,\nl0, {m}, {n}, {k},\n")
    open(f"{d}/l.csv", "w").write("Layer name, IFMAP SRAM Bank, FILTER SRAM Bank,\nl0, 1, 1,\n")
    sim = scalesim(save_disk_space=True, verbose=False, config=f"{d}/c.cfg", topology=f"{d}/t.csv",
                   layout=f"{d}/l.csv", input_type_gemm=True)
    sim.run_scale(top_path=d)
    rows_ = list(csv.reader(open(glob.glob(f"{d}/**/COMPUTE_REPORT.csv", recursive=True)[0])))
    rec = dict(zip([h.strip() for h in rows_[0]], [x.strip() for x in rows_[1]]))
    out.append(int(float(rec["Total Cycles"])))
print(json.dumps(out))
'''


def _python() -> Path:
    root = Path(os.environ.get("DIFFPROBE_CACHE", Path.home() / ".cache" / "diffprobe")) / "scalesim-venv"
    py = root / "bin" / "python"
    if not (root / ".ready").exists():
        venv.create(root, with_pip=True, clear=True)
        # only what the GEMM path imports (numpy, tqdm): its declared dependencies add numba, matplotlib and pandas,
        # tripling the install on a fresh machine for modules this reference never loads
        subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "scalesim==3.0.0", "numpy<2", "tqdm"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=900)
        (root / ".ready").write_text("")
    return py


def cycles(gemms: list[tuple[int, int, int, int, int, str]], timeout: float = 600) -> list[int]:
    """SCALE-Sim's total cycles for each ``(m, n, k, rows, cols, dataflow)`` GEMM (its M, N, K convention)."""
    r = subprocess.run([str(_python()), "-c", SCRIPT, json.dumps(gemms)], check=True, capture_output=True, text=True,
                       timeout=timeout)
    return json.loads(r.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    print(cycles([(8, 8, 8, 4, 4, "os")]), file=sys.stdout)
