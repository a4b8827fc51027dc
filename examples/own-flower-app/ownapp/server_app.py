"""ownapp: the ServerApp."""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from fl_leak.fl import AttackSettings, MaliciousStrategy  # fl-leak
from ownapp.task import INPUT_SHAPE, Net

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run FedAvg for ``num-server-rounds`` rounds, attacking every update on the way."""
    config = context.run_config
    lr = float(config["lr"])
    torch.manual_seed(0)
    initial_arrays = ArrayRecord(Net().state_dict())
    strategy = FedAvg(fraction_train=float(config["fraction-train"]))
    strategy = MaliciousStrategy(  # fl-leak: attack every update before FedAvg aggregates it
        strategy,
        AttackSettings(
            model=Net,
            input_shape=INPUT_SHAPE,
            lr=lr,
            batch_size=int(config["batch-size"]),
            local_steps=int(config["local-steps"]),
        ),
        output_dir=str(config["leak-output-dir"]),
    )
    result = strategy.start(
        grid=grid,
        initial_arrays=initial_arrays,
        train_config=ConfigRecord({"lr": lr}),
        num_rounds=int(config["num-server-rounds"]),
    )
    print(f"final model: {len(result.arrays.to_torch_state_dict())} tensors")
