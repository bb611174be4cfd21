"""What a run cost: FLOPs per sample, synchronized device-seconds, NVML energy, and time-to-threshold."""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.flop_counter import (
    FlopCounterMode,
    conv_flop_count,
    sdpa_backward_flop_count,
    sdpa_flop_count,
)

COST_FIELDS = ("epochs", "samples", "train_flops", "eval_flops", "device_seconds", "eval_device_seconds",
               "wall_seconds", "energy_joules")


def _conv_backward_flops(grad_out, x, weight, *args, out_shape=None, **kwargs) -> int:
    """Gradients of a convolution's input and weight; each costs what the forward convolution costs.

    torch's own formula counts a grouped (depthwise) convolution's weight gradient `groups` times over,
    which made a ConvNeXt's or an EfficientNet's backward pass look 8-40 times dearer than its forward.
    """
    transposed, output_mask = args[4], args[7]
    flops = 0
    if output_mask[0]:
        flops += conv_flop_count(grad_out, weight, out_shape[0], not transposed)
    if output_mask[1]:
        flops += conv_flop_count(x, weight, grad_out, transposed)
    return flops


# Corrections to torch's FlopCounterMode table: grouped convolutions' backward (above), and the CPU's
# fused attention kernels, which torch does not count at all (its CUDA ones it does, with these formulas).
FLOP_FORMULAS = {
    torch.ops.aten.convolution_backward: _conv_backward_flops,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu:
        lambda query, key, value, *args, out_shape=None, **kwargs: sdpa_flop_count(query, key, value),
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward:
        lambda grad, query, key, value, *args, out_shape=None, **kwargs: sdpa_backward_flop_count(grad, query, key,
                                                                                                  value),
}


def count_flops(step, image_size: int, device: torch.device, batch: int = 2) -> int:
    """FLOPs per image of `step(images)` on a zero batch, counted by torch with galbench's corrections.

    Two images: batch statistics are per sample for these models, and two avoid any size-1 special case.
    """
    images = torch.zeros(batch, 3, image_size, image_size, device=device)
    counter = FlopCounterMode(display=False, custom_mapping=FLOP_FORMULAS)
    with counter:
        step(images)
    return int(counter.get_total_flops() // batch)


def flops_per_sample(model: nn.Module, image_size: int, device: torch.device, backward: bool) -> int:
    """FLOPs of one sample's forward (and backward) pass, counted by torch at the real input size."""
    model = copy.deepcopy(model)  # a training-mode pass would move batch norms' running statistics
    model.train(backward)

    def step(images: torch.Tensor) -> None:
        if backward:
            model(images).sum().backward()
        else:
            with torch.no_grad():
                model(images)

    return count_flops(step, image_size, device)


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _uuid_key(value) -> str:
    """A GPU UUID in one spelling: NVML writes `GPU-<hex>`, torch the bare hex groups."""
    return _text(value).lower().removeprefix("gpu-")


def _pci_key(bus_id) -> tuple[int, int, int]:
    """(domain, bus, device) of an NVML PCI bus id such as `00000000:3B:00.0`."""
    domain, bus, device = _text(bus_id).split(".")[0].split(":")
    return int(domain, 16), int(bus, 16), int(device, 16)


def nvml_handle(nvml, index: int):
    """The NVML handle of torch's CUDA device `index`, matched by UUID, else by PCI bus id; None if none matches.

    NVML numbers every GPU of the machine while torch numbers those CUDA_VISIBLE_DEVICES (or Ray) left
    visible, so indices do not correspond; the UUID and the PCI address do. A MIG slice is never given
    the whole card's counter: its UUID matches no GPU, and a PCI match on a GPU in MIG mode is refused.
    """
    props = torch.cuda.get_device_properties(index)
    uuid = getattr(props, "uuid", None)
    pci = tuple(getattr(props, f"pci_{part}_id", None) for part in ("domain", "bus", "device"))
    handles = [nvml.nvmlDeviceGetHandleByIndex(k) for k in range(nvml.nvmlDeviceGetCount())]
    if uuid is not None:
        match = next((h for h in handles if _uuid_key(nvml.nvmlDeviceGetUUID(h)) == _uuid_key(uuid)), None)
        if match is not None:
            return match
    if None in pci:
        return None
    for handle in handles:
        if _pci_key(nvml.nvmlDeviceGetPciInfo(handle).busId) == pci:
            try:
                mig_current, _ = nvml.nvmlDeviceGetMigMode(handle)
            except Exception:  # noqa: BLE001 - GPUs without MIG raise NVMLError_NotSupported
                mig_current = 0
            return None if mig_current else handle
    return None


class EnergyMeter:
    """Total GPU energy from NVML's counter (millijoules since driver load); None without a GPU or NVML.

    A run on a shared GPU (a fraction of one under Ray) gets None too: the counter is the whole card's,
    and other runs' work would be billed to it.
    """

    def __init__(self, device: torch.device, shared_gpu: bool = False):
        self._handle = None
        if device.type != "cuda" or shared_gpu:
            return
        try:
            import pynvml

            pynvml.nvmlInit()
            index = device.index if device.index is not None else torch.cuda.current_device()
            handle = nvml_handle(pynvml, index)
            if handle is None:
                return
            pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
            self._handle, self._nvml = handle, pynvml
        except Exception:  # noqa: BLE001 - no NVML, or a GPU without the energy counter
            self._handle = None

    def joules(self) -> float | None:
        """The counter now, in joules (None where unavailable)."""
        if self._handle is None:
            return None
        return self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle) / 1000.0


@dataclass
class Costs:
    """Running totals of one run; saved in checkpoints so a resumed run continues the count."""

    samples: int = 0
    train_flops: int = 0
    eval_flops: int = 0
    device_seconds: float = 0.0
    eval_device_seconds: float = 0.0
    wall_seconds: float = 0.0
    energy_joules: float | None = None

    def as_dict(self) -> dict:
        """Plain dict for events and checkpoints."""
        return asdict(self)


class Stopwatch:
    """Synchronized device timing: on CUDA the queue is drained before the clock is read."""

    def __init__(self, device: torch.device):
        self.device = device

    def now(self) -> float:
        """Seconds on a monotonic clock after all queued device work has finished."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()


def threshold_crossings(evals: list[dict], thresholds: list[float], metric: str = "val_accuracy") -> dict[float, dict]:
    """For each threshold: the costs at the first eval reaching it, or censored at the run's totals.

    `evals` are eval events in order (each with `metric`, already rounded as logged, and the COST_FIELDS
    that apply). Returns {threshold: {"reached": bool, **costs}}; a run with no evals is censored at zero cost.
    """
    result = {}
    for threshold in thresholds:
        hit = next((e for e in evals if e[metric] >= threshold), None)
        point = hit if hit is not None else (evals[-1] if evals else {})
        result[threshold] = {"reached": hit is not None,
                             **{field: point.get(field, 0) for field in COST_FIELDS}}
    return result
