"""One place decides the torch device: ``auto`` means CUDA when available, else CPU."""

from __future__ import annotations

from .errors import InputError

__all__ = ["resolve_device", "describe_devices"]


def resolve_device(name: str | None = "auto"):
    """``auto``/None -> ``cuda:0`` if available else ``cpu``; ``cpu``; ``cuda``/``cuda:N``/``N``.

    Asking for CUDA where there is none raises `InputError` (rather than silently using the CPU).
    """
    import torch

    name = "auto" if name is None else str(name).strip().lower()
    if name == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.isdigit():
        name = f"cuda:{name}"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"device {name!r} asked for, but no CUDA GPU is available here")
        device = torch.device(name)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"device {name!r}: only {torch.cuda.device_count()} GPU(s) found")
        return device
    raise InputError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N")


def describe_devices() -> str:
    """A one-line description of what compute is available (for logs and the GUI)."""
    import torch

    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        return "CUDA: " + ", ".join(names)
    return f"CPU only ({torch.get_num_threads()} threads)"
