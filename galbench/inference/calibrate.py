"""Calibration: temperature scaling fitted on held-out logits, and the expected calibration error.

Pure functions over arrays. `logits` may carry a leading views axis (V, N, C): the probabilities are then
the mean over views of softmax(logits / T), which is what a rotation-averaged model outputs, so the
temperature is fitted to the quantity that ships.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, logsumexp

ECE_BINS = 15
LOG_TEMPERATURE_BOUNDS = (np.log(0.02), np.log(50.0))


def _views(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    return logits[None] if logits.ndim == 2 else logits


def probabilities(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Mean over views of softmax(logits / temperature); logits (N, C) or (V, N, C)."""
    views = _views(logits)
    return np.exp(log_softmax(views / temperature, axis=-1)).mean(0)


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean NLL of the labels under the view-averaged, temperature-scaled probabilities."""
    views = _views(logits)
    log_p = log_softmax(views / temperature, axis=-1)  # (V, N, C)
    log_mean = logsumexp(log_p, axis=0) - np.log(views.shape[0])
    return float(-log_mean[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimising the NLL, found by bounded Brent search over log T (0.02 to 50)."""
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size == 0:
        raise ValueError("no labelled rows to fit a temperature on")
    result = minimize_scalar(lambda log_t: negative_log_likelihood(logits, labels, float(np.exp(log_t))),
                             bounds=LOG_TEMPERATURE_BOUNDS, method="bounded", options={"xatol": 1e-5})
    return float(np.exp(result.x))


@dataclass(frozen=True)
class Reliability:
    """Per confidence bin: mean confidence, accuracy (None where the bin is empty) and count."""

    confidence: list[float | None]
    accuracy: list[float | None]
    count: list[int]

    @property
    def ece(self) -> float:
        """Expected calibration error: the count-weighted mean |accuracy - confidence| over bins."""
        total = sum(self.count)
        return float(sum(n * abs(a - c) for c, a, n in zip(self.confidence, self.accuracy, self.count, strict=True) if n) / total)

    def as_dict(self) -> dict:
        """JSON-able lists."""
        return {"confidence": self.confidence, "accuracy": self.accuracy, "count": self.count}


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> Reliability:
    """Equal-width confidence bins over (0, 1]: bin b holds confidences in (b/bins, (b+1)/bins]."""
    probs, labels = np.asarray(probs), np.asarray(labels)
    confidence = probs.max(1)
    correct = probs.argmax(1) == labels
    index = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    conf, acc, count = [], [], []
    for b in range(bins):
        members = index == b
        n = int(members.sum())
        count.append(n)
        conf.append(float(confidence[members].mean()) if n else None)
        acc.append(float(correct[members].mean()) if n else None)
    return Reliability(conf, acc, count)


@dataclass(frozen=True)
class Calibration:
    """A fitted temperature and the calibration it buys on the data it was fitted on."""

    temperature: float
    before: Reliability
    after: Reliability

    def as_json(self) -> str:
        """The `calibration` metadata entry of an exported model (the report reads it)."""
        return json.dumps({"temperature": self.temperature, "ece_before": self.before.ece, "ece_after": self.after.ece,
                           "bins": len(self.before.count), "reliability_before": self.before.as_dict(),
                           "reliability_after": self.after.as_dict()})


def calibrate(logits: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> Calibration:
    """Fit a temperature on (view-stacked) logits and measure the ECE before and after."""
    temperature = fit_temperature(logits, labels)
    return Calibration(temperature, reliability(probabilities(logits), labels, bins),
                       reliability(probabilities(logits, temperature), labels, bins))
