"""``--scheduler``: each sampler built from the model's own configuration, its denoiser calls those of diffusers'
own timesteps, stored in run.json; a name that is unknown or does not fit the model is one line."""

import json

import diffusers
import pytest

from diffprobe.cli import main
from diffprobe.models.registry import get_spec
from diffprobe.models.schedulers import SCHEDULERS
from diffprobe.run.profile import ProfileConfig, run_profile

# 25 steps on SD 1.5's own configuration (PNDM's PLMS, timesteps "leading", skip_prk_steps): PLMS evaluates the
# UNet once more than it steps (its first step needs two evaluations); the others once per step
SD15_CALLS_AT_25 = {"ddim": 25, "pndm": 26, "dpm++": 25, "euler": 25, "euler-a": 25, "unipc": 25, "lcm": 25}


@pytest.mark.parametrize("name", sorted(SD15_CALLS_AT_25))
def test_denoiser_calls_follow_the_scheduler(name, tmp_path):
    own = get_spec("sd15").config("scheduler")
    sched = getattr(diffusers, SCHEDULERS[name]).from_config(own)
    sched.set_timesteps(25)
    assert len(sched.timesteps) == SD15_CALLS_AT_25[name]  # diffusers' own timesteps, and the hand count
    r = run_profile(ProfileConfig(model="sd15", steps=25, mode="analytic", scheduler=name, out=str(tmp_path),
                                  trace_ops=True)) if name in ("ddim", "pndm") else None
    if r is not None:  # two traced full-size runs: every UNet call is a record step
        d = json.loads((tmp_path / "run.json").read_text())
        assert d["scheduler"] == SCHEDULERS[name] and d["denoiser_evals"] == SD15_CALLS_AT_25[name]
        steps = r.ops.loc[r.ops["stage"] == "denoiser", "step"].unique()
        assert sorted(steps) == list(range(SD15_CALLS_AT_25[name]))


def test_the_default_is_the_models_own(tmp_path):
    main(["profile", "--model", "tiny", "--steps", "2", "--mode", "analytic", "--out", str(tmp_path), "-q"])
    d = json.loads((tmp_path / "run.json").read_text())
    assert d["scheduler"] == get_spec("tiny").config("scheduler")["_class_name"]


@pytest.mark.parametrize("argv, needle", [
    (["--model", "tiny", "--scheduler", "heun"], "unknown --scheduler 'heun'; use one of ddim, pndm"),
    (["--model", "tiny-flux", "--scheduler", "ddim"], "does not fit tiny-flux (FLUX.1"),
    (["--model", "tiny-sana", "--scheduler", "flow-euler"], "it takes dpm++"),
])
def test_a_bad_scheduler_is_one_line(tmp_path, capsys, argv, needle):
    assert main(["profile", *argv, "--mode", "analytic", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err, err
