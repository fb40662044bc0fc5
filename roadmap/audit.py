"""Audits of the CUDA path that run on any device, the CPU included (tests and `roadmap doctor`).

`DeviceAudit` watches everything torch does inside its `with` block, at two levels: torch's
Python API (a TorchFunctionMode) and the ATen operators under it (a TorchDispatchMode).

Host reads: every operation that makes the host wait for the device's result on CUDA:
`.item()`, `float()/int()/bool()` of a tensor, `.tolist()`, `.numpy()`, `.cpu()` and
`.to("cpu")` of a device tensor, and the operators whose output size or value the host must
know (`_local_scalar_dense`, `nonzero`, boolean-mask indexing, `masked_select`, `unique`,
`equal`, ...), of a DEVICE tensor (below): reading a host tensor waits for nothing (a
sampler's `tolist()`, a DataLoader's seed). Reads made inside `torch.optim` are left out too:
AdamW keeps its step counters on the host on CUDA (unless fused).

Placement: every tensor gets an intended place. A tensor created by a factory (`torch.tensor`,
`zeros`, `arange`, `rand`, ...) without a `device=` argument is HOST: on CUDA it would sit in
host memory. A tensor moved by `.to(device)` (`data.to_device`, `Module.to`) or created with
`device=` the run's device is DEVICE. Every operator's output inherits DEVICE from any DEVICE
input, else HOST from any HOST input. An operator that mixes a HOST tensor of one element or
more dimensions with a DEVICE tensor is *misplaced*: on CUDA it fails ("expected all tensors
on the same device") or copies synchronously. A host scalar (0-dim) is allowed, as CUDA does
(AdamW's step counters). So a CPU run checks what a CUDA run needs: a mask built on the host
and applied to a batch is reported with the line that built it.
"""

import os
import sys
from collections import Counter
from typing import List, Optional

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._device import _device_constructors
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.weak import WeakIdKeyDictionary

aten = torch.ops.aten
_TORCH = os.path.dirname(torch.__file__) + os.sep
_OPTIM = os.path.join(_TORCH, "optim") + os.sep
_HERE = os.path.abspath(__file__)

# operators whose result the host needs (the value, or the size of the output)
SYNC_OPS = {
    aten._local_scalar_dense.default,
    aten.item.default,
    aten.is_nonzero.default,
    aten.equal.default,
    aten.nonzero.default,
    aten.masked_select.default,
    aten._unique2.default,
    aten.unique_dim.default,
    aten.unique_consecutive.default,
    aten.repeat_interleave.Tensor,
}
# Tensor methods that bring values to the host (on a CPU run, no operator shows them)
HOST_METHODS = {
    torch.Tensor.item,
    torch.Tensor.tolist,
    torch.Tensor.numpy,
    torch.Tensor.cpu,
    torch.Tensor.__bool__,
    torch.Tensor.__float__,
    torch.Tensor.__int__,
    torch.Tensor.__index__,
}
COPIES = {aten._to_copy.default, aten.copy_.default, aten._copy_from.default}
CONSTRUCTORS = _device_constructors()
HOST, DEVICE = "host", "device"


def _site() -> str:
    """The first frame outside torch and this module: the line that asked for it."""
    f = sys._getframe(2)
    while f is not None and (f.f_code.co_filename.startswith(_TORCH) or f.f_code.co_filename == _HERE):
        f = f.f_back
    if f is None:
        return "?"
    return f"{os.path.relpath(f.f_code.co_filename)}:{f.f_lineno} ({f.f_code.co_name})"


def _in_optimizer() -> bool:
    f = sys._getframe(2)
    while f is not None:
        if f.f_code.co_filename.startswith(_OPTIM):
            return True
        f = f.f_back
    return False


def _tensors(tree) -> list:
    """The tensors among an operator's arguments or results (nested one list deep, as ATen's)."""
    if isinstance(tree, torch.Tensor):
        return [tree]
    if not isinstance(tree, (list, tuple, dict)):
        return []
    out = []
    for a in tree.values() if isinstance(tree, dict) else tree:
        if isinstance(a, torch.Tensor):
            out.append(a)
        elif isinstance(a, (list, tuple, dict)):
            out.extend(_tensors(a))
    return out


class _Functions(TorchFunctionMode):
    def __init__(self, audit: "DeviceAudit"):
        super().__init__()
        self.a = audit

    def __torch_function__(self, func, types, args=(), kwargs=None):
        a, kwargs = self.a, kwargs or {}
        if (func in HOST_METHODS and a.place(args[0]) == DEVICE) or (
            func is torch.Tensor.to and self._to_host(args, kwargs)
        ):
            a.read(func.__name__)
            a.reading += 1
            try:
                return func(*args, **kwargs)
            finally:
                a.reading -= 1
        out = func(*args, **kwargs)
        if func in CONSTRUCTORS:
            device = kwargs.get("device")
            place = HOST if device is None else (DEVICE if torch.device(device).type == a.device.type else HOST)
            a.tag(out, place, _site() if place == HOST else "")
        elif func in (torch.Tensor.to, torch.Tensor.cuda) and self._target(args, kwargs) is not None:
            target = self._target(args, kwargs)
            a.tag(out, DEVICE if target.type == a.device.type else HOST, _site())
        return out

    def _target(self, args, kwargs) -> Optional[torch.device]:
        if len(args) > 1 and isinstance(args[1], torch.Tensor):
            return args[1].device
        try:
            return torch._C._nn._parse_to(*args[1:], **kwargs)[0]
        except Exception:
            return None

    def _to_host(self, args, kwargs) -> bool:
        """`.to("cpu")` of a DEVICE tensor, on a run whose device is not the CPU: a read."""
        target = self._target(args, kwargs)
        return target is not None and target.type == "cpu" != self.a.device.type and self.a.place(args[0]) == DEVICE


class _Operators(TorchDispatchMode):
    def __init__(self, audit: "DeviceAudit"):
        super().__init__()
        self.a = audit

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        a, kwargs = self.a, kwargs or {}
        inputs = _tensors((args, kwargs))
        places = [a.place(t) for t in inputs]
        if func in SYNC_OPS and DEVICE in places:
            a.read(str(func))
        if DEVICE in places and func not in COPIES:
            for t, p in zip(inputs, places):
                if p == HOST and t.dim() > 0:
                    a.misplaced.append(f"{func} takes a host tensor made at {a.sites.get(t, '?')}, at {_site()}")
                    break
        out = func(*args, **kwargs)
        place = DEVICE if DEVICE in places else HOST if HOST in places else None
        if place is not None:
            site = next((a.sites.get(t) for t, p in zip(inputs, places) if p == HOST), "")
            for t in _tensors(out):
                a.tag(t, place, site)
        return out


class DeviceAudit:
    """`with DeviceAudit(device) as audit:` ...; then `audit.reads` (one site a host read)
    and `audit.misplaced` (one line an operator mixing host and device tensors).

    Count a run's FLOPs (`measure.model_cost`, cached per process) before auditing it:
    fvcore's jit trace under these modes neither counts FLOPs nor reads as a run does."""

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.reads: List[str] = []
        self.misplaced: List[str] = []
        self.reading = 0
        self.places = WeakIdKeyDictionary()
        self.sites = WeakIdKeyDictionary()
        self._modes = [_Functions(self), _Operators(self)]

    def read(self, what: str):
        if not self.reading and not _in_optimizer():
            self.reads.append(f"{what} at {_site()}")

    def tag(self, out, place: str, site: str):
        for t in _tensors(out):
            self.places[t] = place
            if place == HOST:
                self.sites[t] = site
            else:
                self.sites.pop(t, None)

    def place(self, t: torch.Tensor) -> Optional[str]:
        return self.places.get(t)

    def track(self, module: torch.nn.Module):
        """Mark a model built before the audit began as on the device (its parameters, buffers)."""
        for t in [*module.parameters(), *module.buffers()]:
            self.tag(t, DEVICE, "")

    def summary(self) -> str:
        return "; ".join(f"{n} x {s}" for s, n in Counter(self.reads).most_common(5))

    def __enter__(self):
        for m in self._modes:
            m.__enter__()
        return self

    def __exit__(self, *exc):
        for m in reversed(self._modes):
            m.__exit__(*exc)
        return False
