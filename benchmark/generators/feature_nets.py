"""The generator audit's torch feature networks (fixed random CNN, Inception-v3 wrapper, pass-through, in-domain
classifier); imported lazily by ``benchmark.generators.audit`` and ``benchmark.generators.extractor``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RandomConvNet(nn.Module):
    """``random_cnn_v1``: fixed 3×3 convolutions (given weights, no bias), ReLU, 2×2 average pooling; input in
    [-1, 1] resized to `size`; features = the global average of each layer, concatenated."""

    def __init__(self, weights: list, size: int, name: str):
        super().__init__()
        for i, w in enumerate(weights):
            self.register_buffer(f"w{i}", w)
        self.n_layers = len(weights)
        self.size = size
        self.num_features = sum(int(w.shape[0]) for w in weights)
        self.name = name

    def forward(self, x):
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        x = (x - 0.5) / 0.5
        size = self.size
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=x.shape[-1] > size)
        feats = []
        for i in range(self.n_layers):
            x = F.avg_pool2d(F.relu(F.conv2d(x, getattr(self, f"w{i}"), padding=1)), 2)
            feats.append(x.mean(dim=(2, 3)))
        return torch.cat(feats, dim=1)


class InceptionFeatures(nn.Module):
    """Inception-v3 pool3 (2048-d) from local torch-fidelity weights; grey images are repeated to 3 channels."""

    def __init__(self, path):
        from torchmetrics.image.fid import NoTrainInceptionV3

        super().__init__()
        self.net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                                      feature_extractor_weights_path=str(path))
        self.num_features = 2048
        self.name = "inception_v3_pool3"

    def forward(self, x):  # uint8 (N, C, H, W); torch-fidelity resizes to 299 itself
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.net(x[:, :3].contiguous()).reshape(len(x), -1)


class PrecomputedFeatures(nn.Module):
    """Hands already extracted (N, dim) features to torchmetrics' FID/KID as if it were their feature network."""

    def __init__(self, dim: int):
        super().__init__()
        self.num_features = dim

    def forward(self, x):
        return x


class DomainCNN(nn.Module):
    """The in-domain audit extractor: a small classifier (`body` → global pooling, `head` → class logits) whose
    pooled activations are the audit's features; uint8 input is scaled to [-1, 1]."""

    def __init__(self, layers: list, num_features: int, num_classes: int, name: str):
        super().__init__()
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(num_features, num_classes)
        self.num_features = num_features
        self.name = name

    def features(self, x):
        if x.dtype == torch.uint8:
            x = x.float().div(127.5).sub(1.0)
        return self.body(x)

    def forward(self, x):  # the audit calls the module for features, like the other extractors
        return self.features(x)

    def logits(self, x):
        return self.head(self.features(x))
