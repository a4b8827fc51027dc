"""ownapp: the ClientApp."""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fl_leak.fl import attach_oracle  # fl-leak
from ownapp.task import Net, load_data, round_batch, test, train

app = ClientApp()


@app.train()
def train_handler(msg: Message, context: Context) -> Message:
    """Train the model sent by the server on a batch of this client's data."""
    model = Net()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    partition_id = int(context.node_config["partition-id"])
    num_partitions = int(context.node_config["num-partitions"])
    images, labels = load_data(partition_id, num_partitions)
    server_round = int(msg.content["config"]["server-round"])
    batch_size = int(context.run_config["batch-size"])
    inputs, targets = round_batch(images, labels, batch_size, server_round, partition_id)
    lr = float(msg.content["config"]["lr"])
    loss = train(model, inputs, targets, lr, int(context.run_config["local-steps"]))
    content = RecordDict(
        {
            "arrays": ArrayRecord(model.state_dict()),
            "metrics": MetricRecord({"train_loss": loss, "num-examples": len(inputs)}),
        }
    )
    reply = Message(content=content, reply_to=msg)
    attach_oracle(reply, inputs, targets, client=partition_id)  # fl-leak: ground truth, to score
    return reply


@app.evaluate()
def evaluate_handler(msg: Message, context: Context) -> Message:
    """Evaluate the model sent by the server on this client's data."""
    model = Net()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    partition_id = int(context.node_config["partition-id"])
    images, labels = load_data(partition_id, int(context.node_config["num-partitions"]))
    with torch.no_grad():
        loss, accuracy = test(model, images, labels)
    metrics = {"eval_loss": loss, "eval_acc": accuracy, "num-examples": len(images)}
    return Message(content=RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)
