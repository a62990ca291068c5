#!/usr/bin/env bash
# The results behind BENCHMARKS.md "Your own time series" (issue 15): `rnnkit train forecast` on
# the Box & Jenkins airline passengers series (monthly totals of international airline
# passengers in thousands, 1949-1960, 144 months; Box, Jenkins and Reinsel 1976, "Time Series
# Analysis, Forecasting and Control", Series G). benchmarks/data/airline.csv is
# sktime/datasets/data/Airline/Airline.csv copied from the sktime 1.2.0 wheel
# (`pip download sktime --no-deps`; sktime is BSD-3-Clause, the series is a public classic).
#
# Holdout: horizon 12, so 1960 is the test year and 1959 the validation year; the model reads
# 36 months (context) and forecasts 12 at once (direct) or one by one (autoregressive). The
# seasonal-naive (season 12) and last-value baselines are scored on the same windows by the
# task itself. One thread per run; three seeds per decoding.
#
# Reference (optional, when statsmodels is importable): the textbook "airline model",
# SARIMA(0,1,1)(0,1,1)_12 on log passengers (Box and Jenkins 1976), fitted on 1949-1959 and
# forecasting 1960, scored with the same metrics (rnnkit.train.forecast_metrics).
set -euo pipefail
cd "$(dirname "$0")/.."
out=runs/bench-forecast
mkdir -p "$out"
data=benchmarks/data/airline.csv
common=(--data "$data" --data.context=36 --data.horizon=12 --data.season=12
        --steps 1500 --trainer.threads=1)
for decoding in direct autoregressive; do
    for seed in 0 1 2; do
        run="$out/$decoding-seed$seed"
        /usr/bin/time -f "$run: %e s wall" rnnkit train forecast "${common[@]}" \
            --model.decoding=$decoding --seed $seed --run-dir "$run" --overwrite \
            | grep -v '^step' > "$run.log"
        rnnkit eval "$run" --json > "$run.json"
    done
done
python - "$out" "$data" <<'PY'
import json
import sys
from pathlib import Path

out, data = Path(sys.argv[1]), sys.argv[2]
keys = ("mae", "rmse", "smape", "mase")
print("test year 1960, seeds 0 / 1 / 2")
for decoding, prefixes in (("direct", ("", "seasonal_naive_", "last_value_")), ("autoregressive", ("",))):
    rows = [json.loads((out / f"{decoding}-seed{s}.json").read_text())["metrics"] for s in range(3)]
    for prefix in prefixes:
        name = prefix.rstrip("_") or f"lstm {decoding}"
        values = [" / ".join(f"{row[prefix + key]:.3f}" for row in rows) for key in keys]
        print(f"{name:<22} " + " | ".join(f"{k} {v}" for k, v in zip(keys, values)))
try:
    import numpy as np
    import torch
    from statsmodels.tsa.statespace.sarimax import SARIMAX

    from rnnkit.train.forecast_metrics import score
except ImportError:
    sys.exit(0)
values = np.loadtxt(data, delimiter=",", skiprows=1, usecols=1)
train, test = values[:-12], values[-12:]
fit = SARIMAX(np.log(train), order=(0, 1, 1), seasonal_order=(0, 1, 1, 12)).fit(disp=False)
forecast = np.exp(fit.forecast(12))
metrics = score([torch.tensor(train)], torch.tensor(test)[None], torch.tensor(forecast)[None], 12)
print("airline model (SARIMA(0,1,1)(0,1,1)12, log) " + " | ".join(f"{k} {metrics[k]:.3f}" for k in keys))
PY
