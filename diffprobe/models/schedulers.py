"""The schedulers ``--scheduler`` offers: a short name for each diffusers scheduler class, built from the model's
own scheduler configuration (its betas or flow shift, its prediction type), so only the sampling rule changes.

Which of them fit a model is its family's (``Family.schedulers``): the noise-prediction families (SD, SDXL,
PixArt) take every discrete-time scheduler; the flow-matching ones (SD3, FLUX.1/2, Z-Image) the flow-matching Euler
sampler they ship with; Sana its own flow DPM-Solver. How many denoiser evaluations a step count makes comes from the
scheduler's own timesteps (PNDM's PLMS adds one)."""

from __future__ import annotations

from diffprobe.errors import DiffprobeError

SCHEDULERS = {
    "ddim": "DDIMScheduler",
    "pndm": "PNDMScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler-a": "EulerAncestralDiscreteScheduler",
    "unipc": "UniPCMultistepScheduler",
    "lcm": "LCMScheduler",
    "flow-euler": "FlowMatchEulerDiscreteScheduler",
}
NOISE_PREDICTION = ("ddim", "pndm", "dpm++", "euler", "euler-a", "unipc", "lcm")


def check_scheduler(name: str, family, model: str) -> None:
    """Refuse an unknown scheduler, or one the model's family does not take (one line naming the choices)."""
    if name not in SCHEDULERS:
        raise DiffprobeError(f"unknown --scheduler {name!r}; use one of {', '.join(SCHEDULERS)}")
    if name not in family.schedulers:
        raise DiffprobeError(f"--scheduler {name} does not fit {model} ({family.title}); it takes "
                             f"{', '.join(family.schedulers)}")


def scheduler_from(config, name: str):
    """The scheduler ``name`` built from a scheduler configuration (the model's)."""
    import diffusers

    return getattr(diffusers, SCHEDULERS[name]).from_config(config)
