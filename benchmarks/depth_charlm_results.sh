#!/usr/bin/env bash
# Recurrence in depth on the char-LM (issue 16): Tiny Shakespeare, decoder-only transformers of
# width 128 (4 heads, MLP 4x), attending within windows of 64 characters, 32 streams per step,
# seed 0, one thread per run, runs one after another (each under 6 minutes).
# (a) Mixture-of-Recursions (2 shared blocks, up to 4 recursions, expert-choice routing with
#     capacities 4/4, 3/4, 2/4, 1/4, auxiliary BCE loss) against a vanilla 4-block transformer
#     at matched training compute: FLOPs per token of the blocks (2 x matrix parameters per
#     block application + 4 D per attended pair; embedding and head left out, the same for
#     both) printed below; the vanilla trains 1.25 x the MoR's steps, so both spend the same.
# (b) the vanilla 4-block run is the deep teacher; a relaxed recursive model (2 shared blocks x
#     2 loops, cycle, LoRA rank 8) initialized from it stepwise and average, and from scratch,
#     each trained the same short budget; the initialized models' validation bpc before any
#     training is printed too.
set -euo pipefail
cd "$(dirname "$0")/.."
out=runs/depth-charlm
mkdir -p "$out"
mor_steps=400
vanilla_steps=500   # 1.25 x mor_steps: MoR spends 2.5 recursions x 2 blocks = 5 block applications
finetune_steps=200
common=(--trainer.threads=1 --seed 0 --trainer.eval_interval=100000
  --trainer.eval_interval_seconds=0 --trainer.time_budget_seconds=360 --sample.length=200
  --model.mixer=attention --model.transformer.model_size=128 --bptt.window=64 --overwrite)
relaxed=(--model.transformer.num_blocks=2 --model.transformer.depth.recursion=relaxed
  --model.transformer.depth.max_steps=2 --model.transformer.depth.recursive.lora_rank=8)

train() {  # train NAME OPTIONS...
  local name=$1
  shift
  /usr/bin/time -f "$name: %e s wall" rnnkit train charlm "${common[@]}" "$@" \
    --run-dir "$out/$name" > "$out/$name.log" 2> "$out/$name.time"
  grep -E "^model:|final validation" "$out/$name.log" | sed "s/^/$name: /"
  cat "$out/$name.time"
}

python - <<'PY'
# the training FLOPs per token of both models (the MoR counted on one training window)
import torch

torch.set_num_threads(1)

from rnnkit.models.sequence_model import SequenceModelConfig
from rnnkit.models.transformer_lm import TransformerLanguageModel, vanilla_flops_per_token

vanilla = SequenceModelConfig(model_size=128, num_blocks=4, mixer="attention")
config = SequenceModelConfig(model_size=128, num_blocks=2, mixer="attention")
config.depth.recursion, config.depth.max_steps = "mor", 4
model = TransformerLanguageModel(config, 65).train()
model(torch.randint(0, 65, (32, 64)))
statistics = model.network.depth_statistics()
print(f"vanilla 4 blocks: {vanilla_flops_per_token(vanilla, 64):,.0f} FLOPs per token")
print(f"MoR 2 blocks x up to 4 in training: {statistics['flops_per_token']:,.0f} FLOPs per "
      f"token, {statistics['mean_recursions']:.2f} recursions per token")
PY

train vanilla4 --steps "$vanilla_steps" --model.transformer.num_blocks=4
train mor2x4 --steps "$mor_steps" --model.transformer.num_blocks=2 \
  --model.transformer.depth.recursion=mor --model.transformer.depth.max_steps=4
for method in stepwise average; do
  train "relaxed-$method" --steps "$finetune_steps" "${relaxed[@]}" \
    --model.initialize_from="$out/vanilla4" --model.initialization="$method"
done
train relaxed-scratch --steps "$finetune_steps" "${relaxed[@]}"

python - "$out" <<'PY'
# validation bpc of the initialized relaxed models before any training
import sys

import torch

torch.set_num_threads(1)

from rnnkit.train.config import from_dict
from rnnkit.train.tasks import charlm

for method in ("stepwise", "average"):
    document = charlm.checkpoints.read_checkpoint(f"{sys.argv[1]}/relaxed-{method}")
    config = from_dict(charlm.CharLMConfig, document["config"])
    task = charlm.build(config, None)  # initialized from the teacher, not trained
    print(f"relaxed {method} at step 0: validation bpc {task.evaluate()['bpc']:.4f}")
PY
for name in vanilla4 mor2x4; do  # the compute per token of evaluation (causal routing)
  grep -h '"validation"' "$out/$name/metrics.jsonl" | tail -1 | sed "s/^/$name: /"
done

python - "$out" <<'PY'
# diagnosis: the MoR run's validation bpc with the routing of training (top-k of each window,
# not causal: the selection reads the window's later tokens) instead of the causal rule
import sys
from dataclasses import replace

import torch

from rnnkit.models.transformer_lm import WindowLocal
from rnnkit.train.tasks import charlm
from rnnkit.train.tbptt import evaluate_tokens

torch.set_num_threads(1)


class TopKRouting(WindowLocal):
    def train(self, mode: bool = True) -> "TopKRouting":
        super().train(mode)
        self.model.network.depth.train(True)  # evaluate_tokens sets eval mode: keep top-k
        return self


config, model, vocabulary, _ = charlm.load_trained(f"{sys.argv[1]}/mor2x4")
corpus = charlm.load_corpus(config.data, vocabulary)
windows = replace(config.bptt, evaluation_window=config.bptt.window)
model.network.reset_depth_statistics()
result = evaluate_tokens(TopKRouting(model), corpus.validation, windows)
statistics = model.network.depth_statistics()
print(f"mor2x4 with top-k routing: validation bpc {result['bpc']:.4f}, "
      f"{statistics['mean_recursions']:.2f} recursions per token")
PY
