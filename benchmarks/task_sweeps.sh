#!/usr/bin/env bash
# The task sweeps behind BENCHMARKS.md "Benchmark tasks" (issue 12), on 2 CPU cores: two runs at
# once, one thread each. Runs are kept in runs/bench-tasks/*/runs; run this again after an
# interruption and only the unfinished runs train. Each sweep's tables and plots are copied into
# benchmarks/results/tasks/<sweep>/.
set -euo pipefail
cd "$(dirname "$0")/.."
out=runs/bench-tasks
results=benchmarks/results/tasks

sweep() {  # sweep NAME RUNS OPTIONS...: rnnkit bench tasks with runs in $out/RUNS, its tables
  local name=$1 runs=$2  # and plots copied to $results/NAME (the next sweep into RUNS rewrites them)
  shift 2
  rnnkit bench tasks --out "$out/$runs" --jobs 2 "$@"
  mkdir -p "$results/$name"
  cp "$out/$runs"/results.{md,csv} "$out/$runs"/lengths.csv "$out/$runs"/*.png "$results/$name/"
}

# 1. the matrix: 11 mixers x 8 tasks at width 64, 600 steps each (about 75 minutes)
sweep matrix matrix --steps 600

# 2. MQAR against width (Zoology's figure); the width-64 runs are the matrix's
sweep mqar-width matrix --tasks mqar --widths 32 64 128 --steps 600 \
  --mixers lstm mingru selective_ssm gla mlstm deltanet attention

# 3. S5, the hardest word problem, with more steps
sweep s5 s5 --tasks state-tracking --set state-tracking:data.group=s5 --steps 2000 \
  --mixers lstm gru elman mingru gla deltanet attention

# 4. Muon against AdamW on MQAR over a heavy-tailed vocabulary (Zipf exponent 1)
sweep muon muon --tasks mqar --set mqar:data.zipf_exponent=1.0 --steps 600 \
  --mixers lstm gla deltanet attention --optimizers adamw muon

# 5. parity with three seeds (seed 0 is the matrix's run)
sweep parity-seeds matrix --tasks state-tracking --seeds 0 1 2 --steps 600

# 6. S3, the smallest non-abelian group, at the budget of S5
sweep s3 s3 --tasks state-tracking --set state-tracking:data.group=s3 --steps 2000 \
  --mixers lstm gru elman mingru gla deltanet attention

# 7. attention on MQAR at each width with three seeds (seed 0 is the width sweep's)
sweep mqar-attention-seeds matrix --tasks mqar --mixers attention --widths 32 64 128 \
  --seeds 0 1 2 --steps 600

# 8. MQAR with 2,000 steps and three seeds: does attention's transition come in every run?
sweep mqar-long mqar-long --tasks mqar --mixers lstm deltanet attention --seeds 0 1 2 \
  --steps 2000

# 9. attention on MQAR at 2,000 steps at each width, three seeds (width 64 is sweep 8's)
sweep mqar-long-width mqar-long --tasks mqar --mixers attention --widths 32 64 128 \
  --seeds 0 1 2 --steps 2000

# 10. attention on MQAR at width 128 with a third of the learning rate
sweep mqar-long-lr mqar-long-lr --tasks mqar --mixers attention --widths 128 --steps 2000 \
  --set mqar:optimizer.learning_rate=1e-3

# 11. parity with every mixer at the LSTM's parameter count (width 64 for the LSTM)
sweep parity-matched parity-matched --tasks state-tracking --match parameters --steps 600
