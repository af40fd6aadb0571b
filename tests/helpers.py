"""Test-only helpers: Lightning callbacks that interrupt a run at a given step, and device checks
for the spectral code (a factory-call audit and a pseudo device, see below)."""

from __future__ import annotations

import contextlib
import os
import signal
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map


class CrashAtStep(pl.Callback):
    """Crash once `trainer.global_step` reaches `step` (before that step's checkpoint).

    `hard_kill=True` sends SIGKILL to the process (no clean-up runs: like the OOM killer or a
    pre-emption); otherwise a RuntimeError is raised.
    """

    def __init__(self, step: int, hard_kill: bool = False) -> None:
        self.step, self.hard_kill = step, hard_kill

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            if self.hard_kill:  # like the OOM killer or a cluster pre-emption: no clean-up
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError(f"simulated crash at step {trainer.global_step}")


class InterruptAtStep(pl.Callback):
    """Raise KeyboardInterrupt (as Ctrl-C would) once `trainer.global_step` reaches `step`."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            raise KeyboardInterrupt


# ----------------------------------------------------------------------------- device checks
# Only a CPU exists on the test machine; two checks still catch a tensor made on the wrong
# device. `audit_factories` records every torch factory call made from `callbacks/` that does
# not say where its tensor goes (no `device=`, or `device=None`), every generator built without
# a device, and every seeded draw whose generator sits on another device than its tensor.
# Below a Lightning callback, the audit also records any fall-back on torch's default device.
# `on_pseudo_device` runs code on a second device that holds real CPU data but calls itself
# "meta": a tensor made on the CPU by mistake meets the pseudo-device tensors and raises the
# same "Expected all tensors to be on the same device" error CUDA would.

FACTORY_NAMES = ("zeros", "ones", "empty", "full", "eye", "arange", "linspace", "randn", "rand",
                 "randint", "randperm", "tensor", "as_tensor")
FACTORIES = {getattr(torch, n): n for n in FACTORY_NAMES}
PSEUDO = torch.device("meta")
CPU = torch.device("cpu")
CALLBACKS_DIR = str(Path(__file__).resolve().parents[1] / "callbacks")
SPECTRA_DIR = os.path.join(CALLBACKS_DIR, "spectra")
_REAL_GENERATOR = torch.Generator
_REAL_DEFAULT_DEVICE = torch.get_default_device


TORCH_DIR = os.path.dirname(torch.__file__)


def _caller(roots: tuple[str, ...]) -> str | None:
    """Return "file:line (function)" of the code that made the call being audited when that code
    lies under one of `roots`, else None (calls from torch's own Python code, e.g. a DataLoader's
    collate, are torch's business)."""
    for frame in reversed(traceback.extract_stack()):
        if frame.filename == __file__:
            continue
        if frame.filename.startswith(roots) and not frame.filename.startswith(TORCH_DIR):
            rel = os.path.relpath(frame.filename, os.path.dirname(CALLBACKS_DIR))
            return f"{rel}:{frame.lineno} ({frame.name})"
        return None
    return None


def _device_of(value: object) -> torch.device:
    """Return the torch.device a `device=` value names (None: the default device)."""
    return _REAL_DEFAULT_DEVICE() if value is None else torch.device(value)


class FactoryAudit(TorchFunctionMode):
    """Record (callbacks location, what) for device-less factory calls and mismatched generators."""

    def __init__(self, roots: tuple[str, ...] = (CALLBACKS_DIR,)) -> None:
        super().__init__()
        self.roots = roots
        self.calls: list[tuple[str, str]] = []

    def note(self, what: str) -> None:
        """Record `what` when the call comes from code under `roots` (default: `callbacks/`)."""
        where = _caller(self.roots)
        if where is not None:
            self.calls.append((where, what))

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = FACTORIES.get(func)
        if name is not None:
            inherits = name == "as_tensor" and args and isinstance(args[0], torch.Tensor)
            if kwargs.get("device") is None and not inherits:
                self.note(f"torch.{name} without device=")
            gen = kwargs.get("generator")
            if gen is not None and gen.device != _device_of(kwargs.get("device")):
                self.note(f"torch.{name} on {_device_of(kwargs.get('device'))} with a "
                          f"{gen.device} generator")
        return func(*args, **kwargs)


@contextlib.contextmanager
def audit_factories(roots: tuple[str, ...] = (CALLBACKS_DIR,)) -> Iterator[FactoryAudit]:
    """Yield a FactoryAudit of calls from `roots`, active (torch.Generator watched) in the block."""
    audit = FactoryAudit(roots)

    class WatchedGenerator(_REAL_GENERATOR):
        def __new__(cls, device=None):
            if device is None:
                audit.note("torch.Generator without device=")
            return _REAL_GENERATOR.__new__(cls, device="cpu" if device is None else device)

        def __init__(self, device=None) -> None:
            pass

    def default_device() -> torch.device:
        # a Lightning callback (callbacks/*.py, not the math below it) that leaves a routine to
        # fall back on the default device instead of passing its module's
        for frame in reversed(traceback.extract_stack()[:-1]):
            if frame.filename.startswith(CALLBACKS_DIR) and not frame.filename.startswith(
                    SPECTRA_DIR):
                rel = os.path.relpath(frame.filename, os.path.dirname(CALLBACKS_DIR))
                audit.calls.append((f"{rel}:{frame.lineno} ({frame.name})",
                                    "the default device used instead of the module's"))
                break
        return _REAL_DEFAULT_DEVICE()

    torch.Generator = WatchedGenerator
    torch.get_default_device = default_device
    try:
        with audit:
            yield audit
    finally:
        torch.Generator = _REAL_GENERATOR
        torch.get_default_device = _REAL_DEFAULT_DEVICE


class OnDevice(torch.Tensor):
    """A tensor on the pseudo device: real CPU data (`inner`), device reported as "meta".

    Operations run on `inner`; one that meets a CPU tensor of one or more dimensions raises as
    CUDA does (0-dim CPU tensors, cross-device copies and CPU index tensors are allowed, as on
    CUDA). Leaving the device takes an explicit `.cpu()` / `.to("cpu")`.
    """

    _inner: torch.Tensor

    @staticmethod
    def __new__(cls, inner: torch.Tensor) -> OnDevice:
        out = torch.Tensor._make_wrapper_subclass(
            cls, inner.shape, strides=inner.stride(), storage_offset=inner.storage_offset(),
            dtype=inner.dtype, device=PSEUDO, requires_grad=inner.requires_grad)
        out._inner = inner
        return out

    def __repr__(self) -> str:
        return f"OnDevice({self._inner!r})"

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        mixing_ok = func in _CROSS_DEVICE_OPS
        checked = (args[0], *args[2:]) if func in _INDEX_OPS else args  # CPU indices are fine
        for t in tree_flatten((checked, kwargs))[0]:
            if (isinstance(t, torch.Tensor) and not isinstance(t, OnDevice) and t.dim() > 0
                    and not mixing_ok):
                raise RuntimeError(f"{func}: Expected all tensors to be on the same device, but "
                                   f"found at least two devices, {PSEUDO} and {t.device}!")
        unwrapped_args = tree_map(_unwrap, args)
        if func is torch.ops.aten._to_copy.default and "device" in kwargs and \
                _device_of(kwargs["device"]) != PSEUDO:
            return func(*unwrapped_args, **kwargs)  # leaving the pseudo device: a plain tensor
        if "device" in kwargs and kwargs["device"] is not None and \
                _device_of(kwargs["device"]) == PSEUDO:
            kwargs = {**kwargs, "device": CPU}
        out = func(*unwrapped_args, **tree_map(_unwrap, kwargs))
        if func is torch.ops.aten._local_scalar_dense.default:
            return out
        returns = func._schema.returns
        if returns and returns[0].alias_info is not None and returns[0].alias_info.is_write:
            return args[0]  # in-place: the same wrapper
        return tree_map(_wrap, out)


_CROSS_DEVICE_OPS = {torch.ops.aten.copy_.default, torch.ops.aten._to_copy.default}
_INDEX_OPS = {torch.ops.aten.index.Tensor, torch.ops.aten.index_put_.default,
              torch.ops.aten.index_put.default, torch.ops.aten._index_put_impl_.default}


def _unwrap(t):
    return t._inner if isinstance(t, OnDevice) else t


def _wrap(t):
    return OnDevice(t) if isinstance(t, torch.Tensor) and not isinstance(t, OnDevice) else t


def to_pseudo(t: torch.Tensor) -> OnDevice:
    """Return a copy of `t` on the pseudo device."""
    return OnDevice(t.detach().clone()).requires_grad_(t.requires_grad)


def module_to_pseudo(module: nn.Module) -> nn.Module:
    """Move every parameter and buffer of `module` to the pseudo device (in place); returns it."""
    for mod in module.modules():
        for name, p in list(mod._parameters.items()):
            if p is not None:
                mod._parameters[name] = nn.Parameter(to_pseudo(p), requires_grad=p.requires_grad)
        for name, b in list(mod._buffers.items()):
            if b is not None:
                mod._buffers[name] = to_pseudo(b)
    return module


class PseudoGenerator(_REAL_GENERATOR):
    """A CPU generator that says it is on the pseudo device."""

    def __new__(cls, device=None):
        return _REAL_GENERATOR.__new__(cls, device="cpu")

    def __init__(self, device=None) -> None:
        pass

    @property
    def device(self) -> torch.device:
        return PSEUDO


def _target_device(args, kwargs) -> torch.device | None:
    """The device of a Tensor.to(...) call, when it names one."""
    for a in (*args[1:], kwargs.get("device")):
        if isinstance(a, torch.Tensor):
            return a.device
        if isinstance(a, torch.device) or (isinstance(a, str) and a):
            return torch.device(a)
    return None


class PseudoDeviceMode(TorchFunctionMode):
    """Put tensors asked for on the pseudo device there; check generators against their draws."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.to and not isinstance(args[0], OnDevice) and \
                _target_device(args, kwargs) == PSEUDO:
            rest = [a for a in args[1:] if not (isinstance(a, (str, torch.device)))]
            kw = {k: v for k, v in kwargs.items() if k != "device"}
            return OnDevice(args[0].to(*rest, **kw).clone())
        if func is torch.Tensor.tolist and isinstance(args[0], OnDevice):
            return args[0]._inner.tolist()
        if func is torch.Tensor.numpy and isinstance(args[0], OnDevice):
            raise TypeError("can't convert meta device type tensor to numpy. Use Tensor.cpu() to "
                            "copy the tensor to host memory first.")
        gen = kwargs.get("generator")
        if gen is not None:
            want = _device_of(kwargs.get("device"))
            if gen.device != want:
                raise RuntimeError(f"Expected a '{want.type}' device type for generator but "
                                   f"found '{gen.device.type}'")
        if func in FACTORIES and kwargs.get("device") is not None and \
                _device_of(kwargs["device"]) == PSEUDO:
            data = args[0] if args else None
            plain = tree_map(_unwrap, args) if isinstance(data, OnDevice) else args
            return OnDevice(func(*plain, **{**kwargs, "device": CPU}))
        return func(*args, **kwargs)


@contextlib.contextmanager
def on_pseudo_device() -> Iterator[None]:
    """Run the block with the pseudo device available (torch.Generator(device="meta") works)."""
    real = torch.Generator

    class Generator(_REAL_GENERATOR):
        def __new__(cls, device=None):
            if device is not None and _device_of(device) == PSEUDO:
                return PseudoGenerator()
            return _REAL_GENERATOR.__new__(cls, device="cpu" if device is None else device)

        def __init__(self, device=None) -> None:
            pass

    torch.Generator = Generator
    try:
        with PseudoDeviceMode():
            yield
    finally:
        torch.Generator = real
