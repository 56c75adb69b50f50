"""A setting (approximate attention, step-level reuse, or both) measured against its dense run: what ``profile
--approx`` and ``sweep --approx`` add to a run, and the pieces ``diffprobe approx`` shares (the setting installed, the
records of what runs with it)."""

from __future__ import annotations

import contextlib
from dataclasses import replace

from diffprobe.analyses.savings import added_ops, approximate_account, call_key, scaled_records, steps_ran
from diffprobe.attention.approx import JOINT_NOTE, ApproxAttention, kernels_used, masked_note
from diffprobe.attention.core import installed_in
from diffprobe.errors import interruption
from diffprobe.records.schema import DENOISER
from diffprobe.run.config import ProfileConfig, analytic_twin
from diffprobe.run.passes import analytic_pass, measured_pass, merged, trace_with_reuse
from diffprobe.run.settings import Setting, parse_settings
from diffprobe.run.warmup import warm_up

RECORDS = "ops_approx.parquet"  # the setting's records in the run folder, beside the dense run's ops.parquet
ACCOUNT_NOTE = ("FLOPs of the records that ran (reuse) and that a kernel skipping the dropped entries would need "
                "(oracle attention methods: the potential); the seconds are this PyTorch implementation's, untraced")


class SettingInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM while the setting and dense were timed in turn, carrying what :func:`run_setting` returns
    over the pairs of runs that finished (``outcome``; its entry's ``interrupted`` says how many), so that the
    profile writes them before the interruption propagates (nothing measured is lost)."""

    def __init__(self, cause: KeyboardInterrupt, outcome: tuple):
        super().__init__(f"interrupted ({interruption(cause)})")
        self.cause, self.outcome = cause, outcome


class _Unpaired(KeyboardInterrupt):
    def __init__(self, cause: KeyboardInterrupt, timed: dict | None, pairs: int):
        super().__init__(str(cause))
        self.cause, self.timed, self.pairs = cause, timed, pairs


def installed_setting(pipe, setting: Setting, core: ApproxAttention | None):
    """A context in which the pipeline runs the setting: ``core`` serving its attention, its reuse method installed."""
    stack = contextlib.ExitStack()
    if core is not None:
        stack.enter_context(installed_in(pipe, core.core))
    if setting.reuse is not None:
        stack.enter_context(setting.reuse.installed(pipe))
    return stack


def reuse_records(cfg: ProfileConfig, pipe, reuse, evals_full: int, prompts: tuple[str, ...] | None = None):
    """The records of every step of a measured run with step-level ``reuse``: its plan replayed on meta (exactly the
    FLOPs of the measured run), or for a method that decides from the activations (``data_dependent``) a traced
    measured run with it installed, on ``prompts`` (None: the config's)."""
    if not reuse.data_dependent:
        batch = len(prompts) if prompts is not None else cfg.batch
        return trace_with_reuse(analytic_twin(cfg, batch=batch, out=None), reuse)
    traced = replace(cfg, trace_ops=True, repeat=1, warmup=0, chrome_trace=False, hardware=None, sample_steps=0)
    with reuse.installed(pipe):
        return measured_pass(traced, pipe, evals_full, evals_full, prompts=prompts).check().ops


def run_setting(cfg: ProfileConfig, pipe, dense, report=None) -> tuple[dict, object, object]:
    """Run ``cfg.approx`` against ``dense`` (the profile's :class:`~diffprobe.run.result.ProfileResult`): its account
    (records of what ran, attention re-weighted by each call's kept fraction, against dense by stage and layer type,
    in the literature's MACs too, and per image per evaluation), the per-step view of which denoiser blocks ran,
    and measured, the seconds of the setting and of dense, both untraced on the same noise. A reuse method's plan
    differs from step to step, so when the profile sampled fewer steps than its schedule the account and both timed
    runs cover every step (the sampled steps would give a share over other steps than the seconds beside it).
    Returns the ``approx`` entry of ``run.json``, the setting's images (None analytic) and its records
    (:func:`~diffprobe.analyses.savings.scaled_records`), which the profile stores as :data:`RECORDS`."""
    report = report or (lambda *_: None)
    setting = parse_settings(cfg.approx)
    if setting.reuse is not None:
        setting.reuse.check_model(pipe, cfg.model)
    core = ApproxAttention(*setting.attention, seed=cfg.seed, mask_interval=cfg.mask_interval) if (
        setting.attention) else None
    report("approx", 0, 1)
    if core is not None:
        warm_up(pipe, cfg, [cfg.prompt] * cfg.batch, core)  # the block-sparse kernel compiles outside the timed run
    full = cfg.mode == "measured" and setting.reuse is not None and dense.denoiser_evals_measured < dense.denoiser_evals
    evals = dense.denoiser_evals if full else dense.denoiser_evals_measured
    ops, dense_ops = _records(cfg, pipe, setting, dense, full)
    timed = stopped = None
    if cfg.mode == "measured":
        plain = replace(cfg, approx=None, trace_ops=False, chrome_trace=False, hardware=None, compile=False,
                        cuda_graphs=False, sample_steps=0 if full else cfg.sample_steps)
        try:
            timed = alternated(plain, pipe, dense.denoiser_evals, evals, setting, core)
        except _Unpaired as exc:  # the account and the pairs that finished are kept, then the interrupt goes on
            timed, stopped = exc.timed, exc
    images = timed["approx"].images if timed else None
    report("approx", 1, 1)
    calls = one_run(core.calls) if core is not None else None
    entry = _entry(setting, core, approximate_account(ops, calls, dense=dense_ops, images=cfg.batch), cfg)
    entry.update(_coverage(full, evals, dense), **_seconds(timed, dense), records=RECORDS)
    if setting.reuse is not None:
        entry.update(steps=steps_ran(ops, dense_ops), method_overhead=added_ops(dense_ops, ops))
    if cfg.hardware is not None:
        entry["predicted"] = predicted(ops, dense_ops, calls, cfg.hardware, entry)
    if stopped is not None:
        entry["interrupted"] = (f"interrupted ({interruption(stopped.cause)}) after {stopped.pairs} of {cfg.repeat} "
                                "timed pairs of runs (dense, then the setting): the seconds are over those"
                                + ("" if stopped.pairs else ", none: the account alone"))
        raise SettingInterrupted(stopped.cause, (entry, images, scaled_records(ops, calls))) from stopped.cause
    return entry, images, scaled_records(ops, calls)


def predicted(ops, dense_ops, calls, hardware: str, entry: dict) -> dict | None:
    """The setting's and dense's denoiser seconds as ``hardware``'s calibration predicts them
    (:func:`~diffprobe.analyses.predict_setting.setting_seconds`), each beside its untraced measurement (``error`` =
    predicted / measured - 1) where there is one; None where the preset has no calibration."""
    from diffprobe.analyses.predict_setting import setting_seconds
    from diffprobe.hardware.presets import get_preset

    preset = get_preset(hardware)
    if not preset.calibration:
        return None
    out = {"preset": preset.name, **setting_seconds(ops, dense_ops, calls, preset)}
    measured = {"denoiser": entry.get("denoiser_seconds"),
                "dense_denoiser": entry.get("dense_untraced_denoiser_seconds")}
    if measured["denoiser"] is not None:
        out["versus_measured"] = {
            k: {"predicted_s": out[f"{k}_s"], "measured_s": m, "error": out[f"{k}_s"] / m - 1 if m else None}
            for k, m in measured.items() if m is not None}
    return out


def alternated(plain: ProfileConfig, pipe, evals_full: int, evals: int, setting: Setting, core) -> dict:
    """Dense and the setting, untraced on the same noise, timed in turn one run at a time (``--repeat N``: N runs
    of each, dense first, after ``--warmup`` untimed pairs), so that a shared machine's drift meets both alike (timed
    as N of one then N of the other, a VM that slowed by a tenth in between moved the comparison by as much); each
    the median over its runs. Interrupted (Ctrl-C, SIGTERM), it raises the interrupt with the pairs that finished
    (a dense run whose setting's run did not finish is left out: its drift would meet one side only)."""
    parts: dict[str, list] = {"dense": [], "approx": []}
    one = replace(plain, repeat=1, warmup=0)
    try:
        for i in range(plain.warmup + plain.repeat):  # the warm-up runs alternate too, untimed
            runs = {"dense": measured_pass(one, pipe, evals_full, evals).check()}
            with installed_setting(pipe, setting, core):  # its calls' steps count from 0 in each run
                runs["approx"] = measured_pass(one, pipe, evals_full, evals).check()
            if i >= plain.warmup:
                for k, m in runs.items():
                    parts[k].append(m)
    except KeyboardInterrupt as exc:
        pairs = len(parts["approx"])
        raise _Unpaired(exc, {k: merged(v) for k, v in parts.items()} if pairs else None, pairs) from exc
    return {k: merged(v) for k, v in parts.items()}


def one_run(calls: list[dict]) -> list[dict]:
    """The attention calls of one timed run (the last) of several: each (layer, step, call) once."""
    return list({call_key(c): c for c in calls}.values())


def _records(cfg: ProfileConfig, pipe, setting: Setting, dense, full: bool):
    """The records of what runs with the setting's reuse (attention: the dense run's, re-weighted later) and the
    dense records over the same steps."""
    reuse = setting.reuse
    if reuse is None:
        return dense.ops, dense.ops
    if cfg.mode == "analytic":
        with reuse.installed(pipe):
            return analytic_pass(cfg, pipe, plan=reuse.plan_key).ops, dense.ops
    traced = replace(cfg, approx=None, trace_ops=True, repeat=1, warmup=0, chrome_trace=False, hardware=None,
                     compile=False, cuda_graphs=False)
    if full:  # every step: the plan replayed on meta, or a data-dependent method's run and dense both traced
        ops = reuse_records(cfg, pipe, reuse, dense.denoiser_evals)
        if not reuse.data_dependent:
            return ops, trace_with_reuse(analytic_twin(cfg, out=None), None)
        plain = replace(traced, sample_steps=0)
        return ops, measured_pass(plain, pipe, dense.denoiser_evals, dense.denoiser_evals).check().ops
    with reuse.installed(pipe):
        ops = measured_pass(traced, pipe, dense.denoiser_evals, dense.denoiser_evals_measured).check().ops
    return ops, dense.ops


def _entry(setting: Setting, core: ApproxAttention | None, acc: dict, cfg: ProfileConfig) -> dict:
    calls = core.calls if core is not None else []
    joint = any(c["attn_kind"] == "joint" for c in calls)
    method, value = setting.attention or (setting.reuse.name, setting.reuse.value)
    return {"method": method, "value": value, "setting": setting.text, **acc,
            "mask_interval": cfg.mask_interval if core is not None else None,
            "steps": None, "method_overhead": None,
            "kernel": kernels_used(calls) if core is not None else "dense",
            "note": ACCOUNT_NOTE + (f"; {JOINT_NOTE}" if joint else "") + "".join(f"; {x}" for x in masked_note(calls))}


def _coverage(full: bool, evals: int, dense) -> dict:
    if full:
        text = (f"every step of the schedule ({evals} denoiser evaluations), the account and both untraced runs "
                f"alike; the profile above measured {dense.denoiser_evals_measured}")
    else:
        text = (f"the same {evals} of {dense.denoiser_evals} denoiser evaluations as the profile above, the account "
                "and both untraced runs alike")
    return {"denoiser_evals_accounted": evals, "coverage": text}


def _seconds(timed: dict | None, dense) -> dict:
    setting, plain = (timed or {}).get("approx"), (timed or {}).get("dense")
    return {"image": "image_approx.png" if setting is not None else None,
            "denoiser_seconds": setting.stages.get(DENOISER) if setting else None,
            "denoiser_seconds_stats": setting.stage_stats.get(DENOISER) if setting else None,
            "dense_denoiser_seconds": dense.stages.get(DENOISER),
            "dense_untraced_denoiser_seconds": plain.stages.get(DENOISER) if plain else None,
            "dense_untraced_denoiser_seconds_stats": plain.stage_stats.get(DENOISER) if plain else None}
