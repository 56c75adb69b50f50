"""diffprobe: where the FLOPs, bytes and seconds of a text-to-image diffusion run go.

The Python API mirrors the CLI::

    import diffprobe
    result = diffprobe.profile(model="tiny", steps=4)
    result.to_dict()["stages"]
"""

from __future__ import annotations

__version__ = "0.1.0"


def profile(progress=None, **kwargs):
    """Profile one text-to-image run; keyword arguments are the fields of :class:`ProfileConfig`.

    Returns a :class:`~diffprobe.run.profile.ProfileResult` (``.to_dict()`` gives the ``--format json`` output).
    """
    from diffprobe.run.profile import ProfileConfig, run_profile

    return run_profile(ProfileConfig(**kwargs), progress=progress)


def accel(run_dir, arch="sa-dense", density=None, gpu="H100-SXM", masks=None, tau=0.95) -> dict:
    """A profile run folder on accelerator presets (comma list or list); writes ``accel.json`` there and returns
    it (see :func:`diffprobe.run.accel.accel_run`)."""
    from diffprobe.run.accel import accel_run

    return accel_run(run_dir, arch, density, gpu, masks=masks, tau=tau)


def list_models():
    """The embedded architectures (:class:`~diffprobe.models.registry.ModelSpec`)."""
    from diffprobe.models.registry import list_models as _list

    return _list()


__all__ = ["profile", "accel", "list_models", "__version__"]
