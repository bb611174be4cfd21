"""Cost accounting: FLOPs per sample, threshold crossings and censoring, cost arithmetic in a real run."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from galbench.experiment.accounting import flops_per_sample, threshold_crossings
from galbench.models.registry import build_model


def test_flop_counter_matches_hand_count_for_a_linear_layer():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 64 * 64, 10))
    forward = 2 * 3 * 64 * 64 * 10
    assert flops_per_sample(model, 64, torch.device("cpu"), backward=False) == forward
    # backward: gradients for the weights (2*in*out); none for the input image
    assert flops_per_sample(model, 64, torch.device("cpu"), backward=True) == 2 * forward


def test_alexnet_forward_flops_at_224_match_the_published_figure():
    # torchvision lists AlexNet at 0.714 GFLOPS (multiply-adds) per 224 px image; FlopCounter counts 2 per MAC
    flops = flops_per_sample(build_model("alexnet", 1000), 224, torch.device("cpu"), backward=False)
    assert flops / 2 / 1e9 == pytest.approx(0.714, abs=0.005)


def _evals(accuracies):
    return [{"val_accuracy": a, "epochs": 0.5 * (k + 1), "samples": 100 * (k + 1), "train_flops": 1000 * (k + 1),
             "device_seconds": 2.0 * (k + 1), "energy_joules": None} for k, a in enumerate(accuracies)]


def test_first_crossing_and_censoring_at_totals():
    result = threshold_crossings(_evals([0.3, 0.72, 0.65, 0.81]), [0.7, 0.8, 0.9])
    assert result[0.7]["reached"] and result[0.7]["epochs"] == 1.0 and result[0.7]["samples"] == 200
    assert result[0.8]["reached"] and result[0.8]["train_flops"] == 4000
    assert not result[0.9]["reached"] and result[0.9]["epochs"] == 2.0 and result[0.9]["device_seconds"] == 8.0


def test_threshold_reached_exactly_counts():
    assert threshold_crossings(_evals([0.5, 0.8]), [0.8])[0.8]["epochs"] == 1.0


def test_no_evals_is_censored_at_zero():
    assert threshold_crossings([], [0.5])[0.5] == {"reached": False, "epochs": 0, "samples": 0, "train_flops": 0,
                                                   "eval_flops": 0, "device_seconds": 0, "eval_device_seconds": 0,
                                                   "wall_seconds": 0, "energy_joules": 0}


def test_run_costs_add_up(cli, tmp_path):
    from tests.conftest import write_suite

    out = tmp_path / "out"
    assert cli("run", write_suite(tmp_path, seeds=1, epochs=2), "--out", out)[0] == 0
    events = [json.loads(line) for line in (out / "runs/scratch__seed0/events.jsonl").read_text().splitlines()]
    start = events[0]
    evals = [e for e in events if e["event"] == "eval"]
    assert start["event"] == "run_start" and events[-1]["event"] == "run_stop"
    assert [e["epochs"] for e in evals] == [0.5, 1.0, 1.5, 2.0]
    train_size, val_size = start["train_size"], start["val_size"]
    assert evals[-1]["samples"] == 2 * train_size
    assert evals[-1]["train_flops"] == evals[-1]["samples"] * start["train_flops_per_sample"]
    assert evals[-1]["eval_flops"] == 4 * val_size * start["eval_flops_per_sample"]
    assert all(b["device_seconds"] > a["device_seconds"] for a, b in zip(evals, evals[1:], strict=False))
    assert evals[-1]["energy_joules"] is None  # no GPU here: unknown, not zero
    results = json.loads((out / "results.json").read_text())["runs"][0]
    for threshold, cost in results["thresholds"].items():
        first = next((e for e in evals if e["val_accuracy"] >= float(threshold)), None)
        assert cost["reached"] == (first is not None)
        assert cost["epochs"] == (first or evals[-1])["epochs"]
    assert sum(map(sum, results["confusion"])) == events[0]["test_size"]


class _FakeNvml:
    """pynvml's calls galbench makes, over a machine of GPUs described by dicts."""

    def __init__(self, gpus):
        self.gpus = gpus

    def nvmlInit(self):
        pass

    def nvmlDeviceGetCount(self):
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index):
        return index

    def nvmlDeviceGetUUID(self, handle):
        return self.gpus[handle]["uuid"].encode()  # older pynvml returns bytes

    def nvmlDeviceGetPciInfo(self, handle):
        from types import SimpleNamespace

        return SimpleNamespace(busId=self.gpus[handle]["bus"].encode())

    def nvmlDeviceGetMigMode(self, handle):
        return self.gpus[handle].get("mig", 0), self.gpus[handle].get("mig", 0)

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        return self.gpus[handle]["millijoules"]


MACHINE = [{"uuid": f"GPU-0000000{k}-aaaa-bbbb-cccc-dddddddddddd", "bus": f"00000000:{0x1A + k:02X}:00.0",
            "millijoules": 1000 * (k + 1)} for k in range(4)]


def _visible(monkeypatch, gpus, props_by_torch_index):
    """Mock NVML over `gpus` and torch.cuda's properties of the devices torch sees."""
    import sys
    import types

    fake = _FakeNvml(gpus)
    module = types.ModuleType("pynvml")
    for name in dir(fake):
        if name.startswith("nvml"):
            setattr(module, name, getattr(fake, name))
    monkeypatch.setitem(sys.modules, "pynvml", module)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: props_by_torch_index[index])


def _props(gpu, uuid=True):
    from types import SimpleNamespace

    bus = int(gpu["bus"].split(":")[1], 16)
    fields = {"pci_domain_id": 0, "pci_bus_id": bus, "pci_device_id": 0}
    if uuid:  # torch prints the UUID without NVML's "GPU-" prefix
        fields["uuid"] = gpu["uuid"].removeprefix("GPU-")
    return SimpleNamespace(**fields)


def test_energy_is_read_from_the_gpu_torch_uses_not_the_one_at_its_index(monkeypatch):
    from galbench.experiment.accounting import EnergyMeter

    # CUDA_VISIBLE_DEVICES=2,3 (or Ray): torch's cuda:1 is the machine's fourth GPU
    _visible(monkeypatch, MACHINE, {0: _props(MACHINE[2]), 1: _props(MACHINE[3])})
    assert EnergyMeter(torch.device("cuda:1")).joules() == 4.0
    assert EnergyMeter(torch.device("cuda:0")).joules() == 3.0
    # without a UUID from torch, the PCI bus id decides
    _visible(monkeypatch, MACHINE, {0: _props(MACHINE[1], uuid=False)})
    assert EnergyMeter(torch.device("cuda:0")).joules() == 2.0


def test_no_energy_where_the_card_is_not_the_runs_alone(monkeypatch):
    from galbench.experiment.accounting import EnergyMeter

    _visible(monkeypatch, MACHINE, {0: _props(MACHINE[0])})
    assert EnergyMeter(torch.device("cuda:0")).joules() == 1.0
    assert EnergyMeter(torch.device("cuda:0"), shared_gpu=True).joules() is None  # a fraction of a GPU under Ray
    slice_props = _props(MACHINE[0])
    slice_props.uuid = "MIG-11111111-2222-3333-4444-555555555555"  # a MIG slice has its own UUID
    _visible(monkeypatch, [dict(MACHINE[0], mig=0)], {0: slice_props})
    assert EnergyMeter(torch.device("cuda:0")).joules() == 1.0  # found by its PCI address ...
    _visible(monkeypatch, [dict(MACHINE[0], mig=1)], {0: slice_props})
    assert EnergyMeter(torch.device("cuda:0")).joules() is None  # ... but the card is cut into MIG slices
    stranger = _props(MACHINE[0])
    stranger.uuid, stranger.pci_bus_id = "ffffffff-0000-0000-0000-000000000000", 0x7F
    _visible(monkeypatch, MACHINE, {0: stranger})
    assert EnergyMeter(torch.device("cuda:0")).joules() is None  # no match: unknown, never another GPU's counter


def test_a_run_on_a_shared_gpu_is_flagged_in_its_events_and_results(tmp_path):
    import numpy as np

    from galbench.data.tensors import SplitImages
    from galbench.experiment.suite import AugmentSection, TrainSection
    from galbench.experiment.train import RunSpec, run
    from tests.conftest import make_catalog

    catalog = make_catalog(n=12, size=64)
    split = SplitImages.build(catalog.images, np.arange(12), catalog.labels, 1.0, 64, torch.device("cpu"), 2**30)
    spec = RunSpec("v", 0, "alexnet-tiny", catalog.classes, TrainSection(steps=1, evals=1, device="cpu"),
                   AugmentSection(), 64, 1.0, [0.5], shared_gpu=True)
    result = run(spec, split, split, split, tmp_path / "run")
    start = json.loads((tmp_path / "run" / "events.jsonl").read_text().splitlines()[0])
    assert start["shared_gpu"] is True and result["shared_gpu"] is True
    assert result["totals"]["energy_joules"] is None and result["thresholds"]["0.5"]["energy_joules"] is None
