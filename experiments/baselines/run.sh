#!/usr/bin/env bash
# linear, hybrid, ig and dlg on the same client updates, then one report. From the repository root:
#   bash experiments/baselines/run.sh
# The family part (fl_leak/conf/experiment/baselines.yaml): cnn2_c1, cnn3_c1 and lenet at batch 1
# and 4 under FedSGD, every attack. The networks the linear attack refuses (before the run, naming
# the layer), attacked by ig and dlg: resnet_small (BatchNorm, residual blocks) at batch 1 and 4,
# and Flower's quickstart network flower_cnn at batch 1 under FedSGD and at batch 32 under FedAvg
# (5 local SGD steps of learning rate 0.05 on the batch). Each setting is simulated once; its other
# attacks replay the capture.
set -euo pipefail
sweep() { fl-leak --multirun experiment=baselines "$@"; }
sweep
sweep attack=ig_early,dlg_quick model=resnet_small hydra.sweep.dir=experiments/baselines/runs/resnet
sweep attack=ig_early,dlg_quick model=flower_cnn fl.batch_size=1 \
  hydra.sweep.dir=experiments/baselines/runs/flower_b1
sweep attack=ig_early,dlg_quick model=flower_cnn fl.batch_size=32 fl.local_steps=5 fl.lr=0.05 \
  hydra.sweep.dir=experiments/baselines/runs/flower_b32
fl-leak-report experiments/baselines/runs --out experiments/baselines/report
