"""What a node does on its own under the Deployment Engine: its data from its node config, the
ground-truth switch, its name in every reply; the server's directory of names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import Error, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity
from PIL import Image
from safetensors.torch import load

from fl_leak.errors import FlLeakError
from fl_leak.fl.identity import ClientDirectory, identity_record
from fl_leak.fl.node_data import image_folder, sends_ground_truth
from tests.test_fl_units import client_reply, settings_with, train_message


def image_tree(root: Path, classes: dict[str, int], size: tuple[int, int] = (48, 40)) -> Path:
    """``classes[name]`` random RGB images of ``size`` (width, height) in ``root/<name>/``."""
    generator = np.random.default_rng(0)
    for name, count in classes.items():
        (root / name).mkdir(parents=True)
        for index in range(count):
            pixels = generator.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{index}.png")
    return root


def test_a_node_trains_on_its_own_image_folder_and_keeps_it_by_default(tmp_path: Path) -> None:
    root = image_tree(tmp_path / "images", {"coins": 2, "brick": 3})
    settings = settings_with("fl.batch_size=2")

    reply = client_reply(settings, partition=1, node_config={"data-root": str(root)})

    assert reply.content["metrics"]["num-examples"] == 2
    assert reply.content["identity"]["partition-id"] == 1
    assert "oracle" not in reply.content  # its own images: sent only with send-ground-truth=true


def test_a_node_sends_its_own_images_only_when_told_to(tmp_path: Path) -> None:
    root = image_tree(tmp_path / "images", {"coins": 2, "brick": 3})
    node_config = {"data-root": str(root), "send-ground-truth": True}

    reply = client_reply(settings_with("fl.batch_size=2"), node_config=node_config)

    truth = load(bytes(reply.content["oracle"]["tensors"]))
    assert truth["inputs"].shape == (2, 3, 32, 32)
    assert set(truth["labels"].tolist()) <= {7, 9}  # brick and coins of the embedded set


def test_image_folders_take_the_models_input_shape_and_the_run_s_labels(tmp_path: Path) -> None:
    names = ("astronaut", "chelsea", "coffee", "brick")
    named = image_folder(
        str(image_tree(tmp_path / "a", {"coffee": 1, "brick": 2})), (1, 16, 16), names
    )
    other = image_folder(str(image_tree(tmp_path / "b", {"x": 1, "y": 1})), (3, 8, 12), names)

    assert named.images.shape == (3, 1, 16, 16) and named.images.dtype == torch.uint8
    assert named.labels.tolist() == [3, 3, 2]  # ImageFolder's sorted folders, the run's labels
    assert other.images.shape == (2, 3, 8, 12) and other.labels.tolist() == [0, 1]
    with pytest.raises(FlLeakError, match="holds 3 class folders; the model has 2 classes"):
        image_folder(
            str(image_tree(tmp_path / "c", {"p": 1, "q": 1, "r": 1})), (3, 8, 8), ("u", "v")
        )


def test_a_node_with_a_data_root_needs_the_input_shape_from_the_server(tmp_path: Path) -> None:
    root = image_tree(tmp_path / "images", {"coins": 2})
    message = train_message(settings_with())
    del message.content["config"]["input-shape"]
    with pytest.raises(FlLeakError, match="the server sent no input-shape"):
        client_reply(settings_with(), message=message, node_config={"data-root": str(root)})


def test_the_ground_truth_switch_reads_booleans_and_strings() -> None:
    assert sends_ground_truth({"send-ground-truth": "false"}, own=False) is False
    assert sends_ground_truth({"send-ground-truth": "TRUE"}, own=True) is True
    assert sends_ground_truth({}, own=False) and not sends_ground_truth({}, own=True)
    with pytest.raises(FlLeakError, match="must be true or false"):
        sends_ground_truth({"send-ground-truth": "yes"}, own=False)


def test_the_directory_names_error_replies_from_earlier_replies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in (("_run_id", 1), ("_task_id", 1), ("_node_id", 0)):
        monkeypatch.setattr(TaskIdentity, name, value)

    def reply(node: int, partition: int | None) -> Message:
        sent = Message(RecordDict(), dst_node_id=node, message_type="train")
        if partition is None:
            return Message(Error(code=2, reason="failed"), reply_to=sent)
        return Message(RecordDict({"identity": identity_record(partition)}), reply_to=sent)

    directory = ClientDirectory()
    first = [reply(30, 1), reply(40, 0), reply(50, None)]
    directory.learn(first)
    later = [reply(30, None), reply(60, None), reply(40, 0)]
    directory.learn(later)

    assert [directory.client_of(message) for message in first] == [1, 0, None]
    assert all("identity" not in message.content for message in first if not message.has_error())
    assert [directory.client_of(m) for m in sorted(later, key=directory.order)] == [0, 1, None]
