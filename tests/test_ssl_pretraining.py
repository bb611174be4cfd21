"""Self-supervised pretraining: it learns, it is deterministic, its encoder transfers, its probes are right."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("lightly", reason="self-supervised pretraining needs lightly (galbench[ssl])")

from galbench.data.tensors import Normalizer, SplitImages  # noqa: E402
from galbench.data.views import ViewParams, make_view  # noqa: E402
from galbench.experiment.ssl import (  # noqa: E402
    ProbeData,
    SSLNet,
    SSLSpec,
    embeddings,
    fit_linear_probe,
    knn_accuracy,
    pretrain_ssl,
    probe_epochs,
    ssl_flops_per_image,
)
from galbench.models.registry import build_model  # noqa: E402
from galbench.models.weights import load_backbone, load_checkpoint  # noqa: E402
from tests.conftest import make_catalog  # noqa: E402

CPU = torch.device("cpu")


def _split(images, labels, rows):
    return SplitImages.build(images, rows, labels, 1.0, 64, CPU, 2**30)


def _data(n=48, seed=0):
    """Random 64 px images: pretraining rows, and a labelled probe split of its own."""
    catalog = make_catalog(n=n + 24, size=64, seed=seed)
    labels = catalog.labels
    images = _split(catalog.images, np.zeros(len(labels), dtype=np.int64), np.arange(n))
    probe = ProbeData(["a", "b", "c"], _split(catalog.images, labels, np.arange(n, n + 15)),
                      _split(catalog.images, labels, np.arange(n + 15, n + 24)))
    return images, probe


def _spec(**changes):
    base = dict(method="simclr", model="alexnet-tiny", image_size=64, crop=1.0, epochs=2, lr=0.002, batch_size=16,
                hidden_dim=64, projection_dim=32, probes=2, knn_k=5)
    return SSLSpec(**{**base, **changes})


@pytest.mark.parametrize("method", ["simclr", "byol"])
def test_a_few_steps_on_a_tiny_catalog_reduce_the_ssl_loss(method):
    torch.manual_seed(0)
    spec = _spec(method=method)
    net = SSLNet(build_model("alexnet-tiny", 3), spec)
    images = torch.as_tensor(make_catalog(n=32, size=64).images)
    generator = torch.Generator().manual_seed(0)
    normalizer = Normalizer()
    view_a, view_b = (normalizer(make_view(images, generator)) for _ in range(2))

    def loss_now():
        torch.manual_seed(123)  # the same dropout masks for both measurements
        with torch.no_grad():
            return net.loss(view_a, view_b).item()

    before = loss_now()
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=2e-3)
    for step in range(25):
        loss = net.loss(view_a, view_b)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        net.after_step(step, 25)
    after = loss_now()
    assert after < before - 0.1, (before, after)


def test_flops_per_image_count_both_views_and_byols_target():
    spec = _spec()
    simclr = SSLNet(build_model("alexnet-tiny", 3), spec)
    byol = SSLNet(build_model("alexnet-tiny", 3), _spec(method="byol"))
    from galbench.experiment.accounting import flops_per_sample

    one_view = flops_per_sample(build_model("alexnet-tiny", 3), 64, CPU, backward=True)
    simclr_flops = ssl_flops_per_image(simclr, 64, CPU)
    # two views forward and backward through the encoder (and a small head): about twice a supervised step
    assert 2 * one_view * 0.95 < simclr_flops < 2 * one_view * 1.2
    # BYOL adds the target network's forward passes (no backward), about a third more
    assert simclr_flops * 1.2 < ssl_flops_per_image(byol, 64, CPU) < simclr_flops * 1.6
    # the count ran on a copy: the network's batch-norm statistics did not move
    assert torch.equal(simclr.projection.layers[1].running_mean, torch.zeros(64))


def test_pretraining_is_deterministic_on_the_cpu(tmp_path):
    images, probe = _data()
    a = load_checkpoint(pretrain_ssl(_spec(method="byol"), images, probe, tmp_path / "a.pt"))
    b = load_checkpoint(pretrain_ssl(_spec(method="byol"), images, probe, tmp_path / "b.pt"))
    c = load_checkpoint(pretrain_ssl(_spec(method="byol", seed=1), images, probe, tmp_path / "c.pt"))
    assert a["state_dict"].keys() == b["state_dict"].keys()
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert a["meta"]["probe_curve"] == b["meta"]["probe_curve"]
    assert a["meta"]["ssl_loss_curve"] == b["meta"]["ssl_loss_curve"]
    assert not torch.equal(a["state_dict"]["features.0.weight"], c["state_dict"]["features.0.weight"])
    assert not (tmp_path / "a.pt.work").exists()  # the work folder goes once the checkpoint is written


def test_checkpoint_carries_cost_probe_curve_events_and_plot(tmp_path):
    images, probe = _data()
    out = pretrain_ssl(_spec(epochs=3, probes=3), images, probe, tmp_path / "ssl.pt")
    checkpoint = load_checkpoint(out)
    meta = checkpoint["meta"]
    cost = meta["pretrain_cost"]
    assert set(cost) == {"samples", "train_flops", "eval_flops", "device_seconds", "eval_device_seconds",
                         "wall_seconds", "energy_joules", "generation_seconds"}
    # 48 images in batches of 16: three steps per epoch, three epochs
    assert cost["samples"] == 3 * 48 and cost["train_flops"] % cost["samples"] == 0
    assert cost["train_flops"] // cost["samples"] == ssl_flops_per_image(
        SSLNet(build_model("alexnet-tiny", 3), _spec()), 64, CPU)
    # probes before training and after epochs 1, 2 and 3; each embeds the 15 + 9 probe images
    assert [p["epoch"] for p in meta["probe_curve"]] == [0.0, 1.0, 2.0, 3.0]
    assert all(set(p) == {"epoch", "knn_accuracy", "linear_probe_accuracy"} for p in meta["probe_curve"])
    assert cost["eval_flops"] % (4 * 24) == 0 and cost["eval_device_seconds"] > 0
    assert meta["probe_majority_accuracy"] == pytest.approx(3 / 9)
    assert checkpoint["classes"] == ["a", "b", "c"] and checkpoint["format"] == "galbench-checkpoint-1"
    events = [line for line in (tmp_path / "ssl.events.jsonl").read_text().splitlines()]
    kinds = [__import__("json").loads(line)["event"] for line in events]
    assert kinds == ["run_start", "probe", "ssl_epoch", "probe", "ssl_epoch", "probe", "ssl_epoch", "probe",
                     "run_stop"]
    assert (tmp_path / "ssl.probe.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _check_transfer(model_name: str, tmp_path):
    images, probe = _data()
    spec = _spec(model=model_name, epochs=1, probes=1)
    checkpoint = load_checkpoint(pretrain_ssl(spec, images, probe, tmp_path / f"{model_name}.pt"))
    fine_tune = build_model(model_name, 3)
    fresh_head = {k: v.clone() for k, v in fine_tune.state_dict().items() if k.startswith(fine_tune.head_name + ".")}
    load_backbone(fine_tune, checkpoint["state_dict"], "ssl checkpoint")
    state = fine_tune.state_dict()
    head = fine_tune.head_name + "."
    # every encoder weight carries over exactly; the head is the fine-tuning model's own
    assert all(torch.equal(state[k], checkpoint["state_dict"][k]) for k in state if not k.startswith(head))
    assert all(torch.equal(state[k], fresh_head[k]) for k in fresh_head)
    # the checkpoint's own head is the last linear probe: as a classifier it scores the probe's accuracy
    pretrained = build_model(model_name, 3)
    pretrained.load_state_dict(checkpoint["state_dict"])
    pretrained.eval()
    with torch.no_grad():
        predicted = torch.cat([pretrained(Normalizer()(x)).argmax(1) for x, _ in probe.score.batches(64)])
    accuracy = (predicted == probe.score.labels).float().mean().item()
    assert accuracy == pytest.approx(checkpoint["meta"]["probe_curve"][-1]["linear_probe_accuracy"], abs=1e-6)


@pytest.mark.parametrize("model_name", ["alexnet-tiny", "alexnet-small"])
def test_the_encoder_loads_into_the_fine_tuning_model(model_name, tmp_path):
    _check_transfer(model_name, tmp_path)


def test_a_timm_model_pretrains_and_transfers_through_the_interface(tmp_path):
    pytest.importorskip("timm", reason="timm models need the optional timm package")
    _check_transfer("timm:resnet10t", tmp_path)


def test_probe_epochs_start_before_training_and_end_at_the_end():
    assert probe_epochs(10, 4) == [0, 2, 5, 8, 10]
    assert probe_epochs(3, 5) == [0, 1, 2, 3]
    assert probe_epochs(1, 1) == [0, 1]


def test_knn_accuracy_equals_a_brute_force_vote():
    rng = np.random.default_rng(0)
    fit_x, score_x = rng.normal(size=(60, 8)), rng.normal(size=(25, 8))
    fit_y, score_y = rng.integers(0, 3, 60), rng.integers(0, 3, 25)
    for k in (1, 5, 20, 100):
        correct = 0
        for x, y in zip(score_x, score_y, strict=True):
            similarity = fit_x @ x / np.linalg.norm(fit_x, axis=1) / np.linalg.norm(x)
            nearest = np.argsort(-similarity)[:min(k, 60)]
            votes = np.bincount(fit_y[nearest], minlength=3)
            correct += int(np.argmax(votes) == y)  # ties go to the lower class
        mine = knn_accuracy(*(torch.as_tensor(a) for a in (fit_x, fit_y, score_x, score_y)), k=k, n_classes=3)
        assert mine == pytest.approx(correct / 25)


def _softmax(logits):
    shifted = np.exp(logits - logits.max(1, keepdims=True))
    return shifted / shifted.sum(1, keepdims=True)


def test_linear_probe_solves_the_regularised_problem():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 5)) * [1, 10, 0.1, 3, 1] + [0, 5, -2, 0, 1]
    y = rng.integers(0, 3, 200)
    x[:, 0] += y * 0.8  # some signal
    weight, bias = fit_linear_probe(torch.as_tensor(x), torch.as_tensor(y), 3)
    # the gradient of the objective (in the standardised coordinates the probe regularises) is zero
    mean, spread = x.mean(0), x.std(0)
    z = (x - mean) / spread
    w_std = weight.double().numpy() * spread
    b_std = bias.double().numpy() + weight.double().numpy() @ mean
    residual = _softmax(z @ w_std.T + b_std) - np.eye(3)[y]
    grad_w = residual.T @ z / 200 + w_std / 200
    grad_b = residual.mean(0)
    assert np.abs(grad_w).max() < 1e-5 and np.abs(grad_b).max() < 1e-5


def test_unregularised_linear_probe_matches_statsmodels():
    statsmodels = pytest.importorskip("statsmodels.api", reason="statsmodels is the reference here")
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 3))
    logits = x @ np.array([[0.0, 0, 0], [1.0, -0.5, 0.2], [-0.7, 0.3, 1.0]]).T
    y = np.array([rng.choice(3, p=p) for p in _softmax(logits)])
    weight, bias = fit_linear_probe(torch.as_tensor(x), torch.as_tensor(y), 3, l2=0.0)
    mine = _softmax(x @ weight.double().numpy().T + bias.double().numpy())
    reference = statsmodels.MNLogit(y, statsmodels.add_constant(x)).fit(disp=False).predict(statsmodels.add_constant(x))
    np.testing.assert_allclose(mine, reference, atol=2e-4)


def test_embeddings_are_the_models_pre_logits_with_dropout_off():
    images, _ = _data(n=8)
    model = build_model("alexnet-tiny", 3)
    model.train()
    first = embeddings(model, images, Normalizer())
    assert first.shape == (8, model.num_features) and model.training
    torch.testing.assert_close(first, embeddings(model, images, Normalizer()))


def test_impossible_settings_are_refused_in_one_line(tmp_path):
    from galbench.errors import GalbenchError

    images, probe = _data(n=8)
    for bad in (dict(batch_size=1), dict(probes=0), dict(method="mae"), dict(temperature=0)):
        with pytest.raises(GalbenchError):
            pretrain_ssl(_spec(**bad), images, probe, tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()


def test_views_keep_their_own_generator_stream():
    # pretraining draws its views from their own generator: the global RNG (dropout) does not shift them
    images = torch.as_tensor(make_catalog(n=4, size=64).images)
    torch.manual_seed(0)
    a = make_view(images, torch.Generator().manual_seed(1), ViewParams())
    torch.rand(100)
    b = make_view(images, torch.Generator().manual_seed(1), ViewParams())
    assert torch.equal(a, b)
