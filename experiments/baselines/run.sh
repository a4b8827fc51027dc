#!/usr/bin/env bash
# linear, hybrid, ig and dlg on the same client updates, then one report. From the repository root:
#   bash experiments/baselines/run.sh
# The family part (fl_leak/conf/experiment/baselines.yaml): cnn2_c1, cnn3_c1, lenet, resnet_small
# at batch 1 and 4 under FedSGD. The Flower part: Flower's quickstart network flower_cnn at batch 1
# under FedSGD, and at batch 32 under FedAvg (5 local SGD steps of learning rate 0.05 on the batch).
# Each setting is simulated once; its other attacks replay the capture. A sweep of one setting
# runs its jobs one after the other (they wait on the setting's capture).
set -euo pipefail
sweep() { fl-leak --multirun experiment=baselines "$@"; }
sweep
sweep model=flower_cnn fl.batch_size=1 hydra.sweep.dir=experiments/baselines/runs/flower_b1
sweep model=flower_cnn fl.batch_size=32 fl.local_steps=5 fl.lr=0.05 \
  hydra.sweep.dir=experiments/baselines/runs/flower_b32
fl-leak-report experiments/baselines/runs --out experiments/baselines/report
