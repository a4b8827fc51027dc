#!/usr/bin/env bash
# Every defense at three strengths against linear and hybrid, then one report.
# From the repository root: bash experiments/defenses/run.sh
set -euo pipefail
sweep() { fl-leak --multirun experiment=defenses "$@"; }
sweep defense=none
sweep defense=prune defense.options.fraction=0.5,0.9,0.99
sweep defense=topk defense.options.keep=0.3,0.1,0.01
sweep defense=clip_noise defense.options.where=server defense.options.clipping_norm=0.5 \
  defense.options.noise_multiplier=0.1,1,10 hydra.sweep.dir=experiments/defenses/runs/central_dp
sweep defense=clip_noise defense.options.where=client defense.options.clipping_norm=0.5 \
  defense.options.noise_multiplier=0.001,0.01,0.1 hydra.sweep.dir=experiments/defenses/runs/local_dp
sweep defense=dp_sgd defense.options.noise_multiplier=0.01,0.1,1
sweep defense=mixup defense.options.alpha=0.2,1,4
sweep defense=instahide defense.options.k=2,4,6
sweep defense=secagg fl.num_clients=2,4,8
fl-leak-report experiments/defenses/runs --out experiments/defenses/report
