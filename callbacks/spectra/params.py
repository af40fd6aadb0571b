"""Selecting the parameters of a model that a Hessian or an NTK is taken over."""

from __future__ import annotations

import re
from collections.abc import Iterable

import torch
from torch import nn


def select_params(
    model: nn.Module,
    params: Iterable[torch.Tensor] | Iterable[tuple[str, torch.Tensor]] | str | None = None,
    param_filter: str | None = None,
) -> list[tuple[str, torch.Tensor]]:
    """Return [(name, parameter)] in ``model.named_parameters()`` order.

    ``params``: None (every parameter with requires_grad), a regex string on parameter names,
    an iterable of parameters of ``model`` or of (name, parameter) pairs. ``param_filter``: an
    extra regex (``re.search`` on the name) applied on top. Raises ValueError when nothing is
    selected or a given tensor is not a parameter of the model.
    """
    named = [(n, p) for n, p in model.named_parameters()]
    if params is None:
        chosen = [(n, p) for n, p in named if p.requires_grad]
    elif isinstance(params, str):
        rx = re.compile(params)
        chosen = [(n, p) for n, p in named if rx.search(n)]
    else:
        items = list(params)
        ids = set()
        for it in items:
            t = it[1] if isinstance(it, tuple) else it
            if not isinstance(t, torch.Tensor):
                raise ValueError(f"params must hold tensors or (name, tensor) pairs, got {type(t)}")
            ids.add(id(t))
        chosen = [(n, p) for n, p in named if id(p) in ids]
        if len(chosen) != len(ids):
            raise ValueError("params holds tensors that are not parameters of the model")
    if param_filter is not None:
        rx = re.compile(param_filter)
        chosen = [(n, p) for n, p in chosen if rx.search(n)]
    if not chosen:
        names = [n for n, _ in named]
        raise ValueError(
            f"no parameters selected (params={params!r}, param_filter={param_filter!r}); "
            f"model parameters: {names[:20]}{' ...' if len(names) > 20 else ''}"
        )
    return chosen
