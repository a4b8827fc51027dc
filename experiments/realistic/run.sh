#!/usr/bin/env bash
# Flower's quickstart setting, every attack, then one report. From the repository root:
#   bash experiments/realistic/run.sh
# fl_leak/conf/experiment/realistic.yaml: flower_cnn, 10 clients (one sampled), batch 32, one
# round of FedAvg over the client's partition, 1 or 3 local epochs at learning rate 0.01 or 0.1.
# The first sweep simulates the four settings; every later sweep replays their captures. The
# attacks run on short budgets (2 shared CPU cores; experiments/realistic/README.md): the max-pooling
# position search 5 solves from one start (defaults 20 and 4 starts), the optimisations stopped
# early or after a few hundred iterations. Last, the table and figure (figure.py) and the audit at
# the data of client 5, the client sampled in the 1-epoch settings of the committed run (audit.py).
set -euo pipefail
sweep() { fl-leak --multirun experiment=realistic "$@"; }
sweep attack=linear +attack.options.pool_rounds=5 +attack.options.pool_restarts=0
sweep attack=hybrid_quick +attack.options.pool_rounds=5 +attack.options.pool_restarts=0
sweep attack=ig_early
sweep attack=dlg_quick
sweep attack=fedavg_hybrid +attack.options.pool_rounds=5 +attack.options.pool_restarts=0 \
  +attack.options.trajectory_iterations=3 +attack.options.retry_stages=0 \
  +attack.options.iterations=100
sweep attack=fedavg_unroll +attack.options.iterations=200
fl-leak-report experiments/realistic/runs --out experiments/realistic/report
python experiments/realistic/figure.py
python experiments/realistic/audit.py --client 5
