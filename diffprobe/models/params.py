"""Where a model's parameters are: per component, per top-level module of each component, and per role (attention,
feed-forward, modulation, norm, embedding, ...), built on the meta device (``diffprobe models --params-by-module``).

A parameter's role is that of the outermost module above it with a compound role (attention, ffn, modulation,
embed, rope: the projections of an attention layer are attention), else its own module's (linear, conv, norm), else
``other``; the roles are those the tracer gives the ops (``models/families/roles.py`` and the family's
``path_roles``)."""

from __future__ import annotations

from diffprobe.models.families.roles import role_of
from diffprobe.models.registry import ModelSpec, build_components

COMPOUND = ("attention", "ffn", "modulation", "embed", "rope", "moe_router", "moe_shared", "moe_expert")


def params_by_module(spec: ModelSpec) -> dict:
    """``{component: {"total": n, "by_module": {child: n}, "by_role": {role: n}}}`` for every component with
    parameters, in the pipeline's order; every count sums to the component's total."""
    out = {}
    for name, comp in build_components(spec, "meta").items():
        if not hasattr(comp, "named_parameters"):
            continue
        roles = _roles(comp, spec.family.path_roles)
        by_module: dict[str, int] = {}
        by_role: dict[str, int] = {}
        for pname, p in comp.named_parameters():
            owner = pname.rsplit(".", 1)[0] if "." in pname else ""
            child = pname.split(".", 1)[0] if "." in pname else "(own)"
            by_module[child] = by_module.get(child, 0) + p.numel()
            role = _role_of(owner, roles)
            by_role[role] = by_role.get(role, 0) + p.numel()
        out[name] = {"total": sum(by_module.values()), "by_module": by_module,
                     "by_role": dict(sorted(by_role.items(), key=lambda kv: -kv[1]))}
    return out


def _roles(module, path_roles: dict) -> dict[str, str]:
    """Each submodule path's own role ("" where none; a plain embedding table is ``embed``)."""
    import torch

    return {path: role_of(path, m, path_roles) or ("embed" if isinstance(m, torch.nn.Embedding) else "")
            for path, m in module.named_modules()}


def _role_of(owner: str, roles: dict[str, str]) -> str:
    """The role of a parameter owned by the module at ``owner`` (see the module's docstring)."""
    parts = owner.split(".") if owner else []
    for i in range(1, len(parts) + 1):  # outermost first
        role = roles.get(".".join(parts[:i]), "")
        if role in COMPOUND:
            return role
    return roles.get(owner, "") or "other"
