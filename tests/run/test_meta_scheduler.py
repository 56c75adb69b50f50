"""Analytic mode's scheduler on meta: the same ops as on the CPU, and one guidance default everywhere."""

import pytest

import diffprobe
from diffprobe.models.registry import get_spec


def test_analytic_scheduler_steps_run_on_meta(tmp_path, monkeypatch):
    import diffusers

    seen = []
    original = diffusers.DDIMScheduler.step

    def spy(self, model_output, timestep, sample, *args, **kwargs):
        seen.append((model_output.device.type, sample.device.type))
        return original(self, model_output, timestep, sample, *args, **kwargs)

    monkeypatch.setattr(diffusers.DDIMScheduler, "step", spy)
    diffprobe.profile(model="tiny", steps=3, mode="analytic", out=str(tmp_path / "a"))
    assert seen == [("meta", "meta")] * 3  # nothing the size of the latent is allocated on the CPU


@pytest.mark.parametrize("name", sorted({get_spec(m).config("scheduler")["_class_name"] for m in
                                         ("sd15", "sd21", "sdxl", "tiny", "digits")}))
def test_scheduler_step_traces_the_same_ops_on_meta_as_on_cpu(name):
    # the analytic account runs the step on meta: its ops and shapes must be those of a real CPU step
    import diffusers
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    class Ops(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            shapes = [tuple(a.shape) for a in args if isinstance(a, torch.Tensor)]
            self.ops.append((str(func), shapes))
            return out

    def trace(device):
        sched = getattr(diffusers, name)()
        sched.set_timesteps(4, device="cpu")
        x = torch.zeros(1, 4, 8, 8, device=device)
        mode = Ops()
        for t in sched.timesteps[:3]:
            with mode:
                x = sched.step(torch.zeros(1, 4, 8, 8, device=device), t, x, return_dict=False)[0]
        return mode.ops

    assert trace("meta") == trace("cpu")


def test_digits_guidance_is_the_same_everywhere(tmp_path):
    from diffprobe.run.profile import ProfileConfig

    assert ProfileConfig(model="digits").resolved().guidance == 4.0
    assert ProfileConfig(model="sd15").resolved().guidance == 7.5
