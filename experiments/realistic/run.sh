#!/usr/bin/env bash
# Flower's quickstart setting, every attack, then one report. From the repository root:
#   bash experiments/realistic/run.sh [RUNS REPORT [OVERRIDE...]]
# fl_leak/conf/experiment/realistic.yaml: flower_cnn, 10 clients (one sampled), batch 32, one
# round of FedAvg over the client's partition, 1 or 3 local epochs at learning rate 0.01 or 0.1.
# Six sweeps, one per attack, each into RUNS/<attack> (default experiments/realistic/runs), with
# every OVERRIDE added to each (fl.local_epochs=3: the two 3-epoch settings only). The first sweep
# simulates each setting and saves its capture; every later sweep replays it, so within a setting
# every attack sees the same update. The attacks run on short budgets (2 shared CPU cores;
# experiments/realistic/README.md): the max-pooling position search 5 solves from one start
# (defaults 20 and 4 starts), the optimisations stopped early or after a few hundred iterations.
# Then the report of RUNS into REPORT (default experiments/realistic/report); the table and figure
# (figure.py) from experiments/realistic/report/results.csv, whose settings REPORT's replace; and
# the audit at the data of client 5, the client sampled in the 1-epoch settings (audit.py).
# The committed results are two runs (README.md): this script without arguments, then the 3-epoch
# settings again from fresh captures:
#   bash experiments/realistic/run.sh experiments/realistic/runs3 experiments/realistic/report3 \
#     fl.local_epochs=3
set -euo pipefail
here=experiments/realistic
runs=${1:-$here/runs}
report=${2:-$here/report}
extra=("${@:3}")
sweep() {
  fl-leak --multirun experiment=realistic "hydra.sweep.dir=$runs/\${attack.name}" "$@" "${extra[@]}"
}
sweep attack=linear +attack.options.pool_rounds=5 +attack.options.pool_restarts=0
sweep attack=hybrid_quick +attack.options.pool_rounds=5 +attack.options.pool_restarts=0
sweep attack=ig_early
sweep attack=dlg_quick
sweep attack=fedavg_hybrid +attack.options.pool_rounds=5 +attack.options.pool_restarts=0 \
  +attack.options.trajectory_iterations=3 +attack.options.retry_stages=0 \
  +attack.options.iterations=100
sweep attack=fedavg_unroll +attack.options.iterations=200
fl-leak-report "$runs" --out "$report"
results=("$here/report/results.csv")
if [[ $report != "$here/report" ]]; then results+=("$report/results.csv"); fi
python $here/figure.py --results "${results[@]}"
python $here/audit.py --client 5
