"""Coverage of the accuracy-difference interval and power at the reported MDE, by simulation.

    python tools/stats_coverage.py --simulations 2000     # about 20 s per line on one free core

Each simulated experiment has two arms of `runs` seeds evaluated on the same 600 test galaxies. A run's
correctness on a galaxy is Bernoulli(expit(logit + skill + difficulty + arm_image + noise)): skill drawn per
run (seed variance), difficulty per galaxy and shared by both arms, arm_image per galaxy and arm (what one arm
finds hard and the other not), noise per run and galaxy. The population difference is computed by quadrature.
Prints one JSON line per setting: coverage at nominal 0.95 with its Monte-Carlo standard error.
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
from scipy.optimize import brentq
from scipy.special import expit

from galbench.analysis import stats

# standard deviations on the logit scale: (seed skill, shared difficulty, arm-by-image, run-by-image)
SETTINGS = {
    "seed-dominated": (0.15, 1.5, 0.1, 0.3),
    "image-dominated": (0.02, 1.5, 1.0, 0.3),
    "balanced": (0.10, 1.5, 0.5, 0.8),
    "bernoulli-only": (0.0, 0.0, 0.0, 0.0),
    "run-by-image-only": (0.0, 2.0, 0.0, 1.0),
}
NODES, WEIGHTS = np.polynomial.hermite_e.hermegauss(80)
BASELINE_LOGIT = 1.6
IMAGES = 600


def population_accuracy(logit: float, sd: float) -> float:
    """E[expit(logit + sd Z)], Z standard normal, by Gauss-Hermite quadrature."""
    return float((WEIGHTS * expit(logit + sd * NODES)).sum() / WEIGHTS.sum())


def simulate(rng, logits, sds, runs):
    """Runs x images correctness of each arm on one shared test set."""
    sd_seed, sd_image, sd_arm_image, sd_noise = sds
    difficulty = rng.normal(0, sd_image, IMAGES)
    arms = []
    for logit in logits:
        drift = logit + difficulty + rng.normal(0, sd_arm_image, IMAGES)
        eta = drift + rng.normal(0, sd_seed, (runs, 1)) + rng.normal(0, sd_noise, (runs, IMAGES))
        arms.append(rng.random((runs, IMAGES)) < expit(eta))
    return arms


def study(name: str, difference: float, runs: int, simulations: int, seed: int) -> dict:
    """Coverage of accuracy_difference_ci and the permutation test's rejection rate for one setting."""
    sds = SETTINGS[name]
    total_sd = math.sqrt(sum(s * s for s in sds))
    baseline = population_accuracy(BASELINE_LOGIT, total_sd)
    logit = BASELINE_LOGIT if difference == 0 else brentq(
        lambda m: population_accuracy(m, total_sd) - baseline - difference, BASELINE_LOGIT - 3, BASELINE_LOGIT + 3)
    truth = population_accuracy(logit, total_sd) - baseline
    rng = np.random.default_rng(seed)
    labels = np.zeros(IMAGES, int)
    covered = rejected = 0
    estimates, ses = [], []
    for index in range(simulations):
        correct_a, correct_b = simulate(rng, (logit, BASELINE_LOGIT), sds, runs)
        ci = stats.accuracy_difference_ci(correct_a.mean(1), correct_b.mean(1), (~correct_a).astype(int),
                                          (~correct_b).astype(int), labels, seed=index)
        covered += ci.low <= truth <= ci.high
        rejected += stats.permutation_mean_difference(correct_a.mean(1), correct_b.mean(1)).p_value < 0.05
        estimates.append(ci.difference)
        ses.append(ci.se)
    coverage = covered / simulations
    return {"setting": name, "runs_per_arm": runs, "difference": round(truth, 5), "simulations": simulations,
            "coverage": coverage, "coverage_mc_se": round(math.sqrt(coverage * (1 - coverage) / simulations), 4),
            "sd_of_estimate": round(float(np.std(estimates, ddof=1)), 5), "mean_se": round(float(np.mean(ses)), 5),
            "permutation_p_below_0.05": rejected / simulations}


def mde_power(runs: int, alpha: float, simulations: int, seed: int) -> dict:
    """Power of the permutation test at the MDE the analysis reports for normal runs of known SD."""
    rng = np.random.default_rng(seed)
    sd = 0.01
    se = sd * math.sqrt(2 / runs)
    factor = stats.permutation_mde_factor(runs, runs, alpha)
    mde = factor * se if factor is not None else stats.minimum_detectable_effect(se, 2 * runs - 2, alpha)
    detected = sum(stats.permutation_mean_difference(rng.normal(mde, sd, runs), rng.normal(0, sd, runs),
                                                     seed=i).p_value < alpha for i in range(simulations))
    power = detected / simulations
    return {"runs_per_arm": runs, "alpha": alpha, "mde_in_se": round(mde / se, 3), "power": power,
            "power_mc_se": round(math.sqrt(power * (1 - power) / simulations), 4)}


def main() -> None:
    """Run the study and print one JSON line per setting."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--simulations", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for name in SETTINGS:
        for difference in (0.0, 0.02):
            print(json.dumps(study(name, difference, 5, args.simulations, args.seed)), flush=True)
    for name in ("seed-dominated", "image-dominated"):
        print(json.dumps(study(name, 0.0, 3, args.simulations, args.seed)), flush=True)
    for runs, alpha in ((4, 0.05), (5, 0.05), (5, 0.025), (5, 0.05 / 6), (6, 0.05 / 12), (10, 0.05)):
        print(json.dumps(mde_power(runs, alpha, args.simulations, args.seed)), flush=True)


if __name__ == "__main__":
    main()
