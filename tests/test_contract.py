"""Contract over every registry entry: it loads, and it does its job (backbones: a training step at every size)."""

import numpy as np
import pytest
import torch

from benchmark.core import registry
from benchmark.data import dataset_source
from benchmark.data.medmnist import SIZES
from benchmark.generators.base import Generator, Method, TrainingSet


@pytest.mark.parametrize("name", registry.list_entries("dataset"))
def test_dataset_entry_describes_itself_without_reading_data(name):
    source = dataset_source(name)
    assert source.sizes and source.num_classes >= 2
    assert source.task in ("binary-class", "multi-class", "ordinal-regression", "multi-label, binary-class")
    assert (source.unsupported_reason is not None) == source.task.startswith("multi-label")


@pytest.mark.parametrize("name", registry.list_entries("generator"))
def test_generator_entry_loads_and_follows_the_interface(name):
    entry = registry.get("generator", name)
    cls = entry.load()
    assert issubclass(cls, (Method, Generator)), f"{entry.target} is neither a Method nor a Generator"
    assert isinstance(entry.config.get("uses_synthetic_ratio", True), bool)
    if issubclass(cls, Method) and entry.config.get("kind") == "baseline":
        labels = np.array([0] * 4 + [1] * 12)
        real = TrainingSet(np.zeros((16, 1, 8, 8), np.uint8), labels, np.zeros(16, bool))
        out = registry.create("generator", entry).build_training_set(real, 0, 1.0, 2, seed=0)
        assert out.images.dtype == np.uint8 and len(out.images) == len(out.labels) == len(out.is_synthetic)
        assert (out.labels[~out.is_synthetic] == labels).all()


@pytest.mark.slow
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", registry.list_entries("backbone"))
def test_every_backbone_trains_one_step_at_every_resolution(name, size):
    backbone = registry.create("backbone", name)
    torch.manual_seed(0)
    model = backbone.build(in_chans=1, num_classes=3, image_size=size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.randn(2, 1, size, size), torch.tensor([0, 2])
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert model(x).shape == (2, 3)
