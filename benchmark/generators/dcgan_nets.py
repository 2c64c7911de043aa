"""The DCGAN's torch networks (generator, projection discriminator, VGG perceptual features); imported lazily by
``benchmark.generators.dcgan`` so that building or checking a config imports no torch."""

from __future__ import annotations

import torch
from torch import nn


class ConditionalGenerator(nn.Module):
    """[z ; embed(class)] → ConvTranspose(base×base) → (n − 1) × [ConvTranspose(4, 2, 1), BatchNorm, ReLU] →
    ConvTranspose(4, 2, 1) → tanh; widths ngf·2^(n−1) halving to ngf."""

    def __init__(self, num_classes: int, channels: int, base: int, n: int, nz: int, ngf: int, embed_dim: int):
        super().__init__()
        self.embed = nn.Embedding(num_classes, embed_dim)
        width = ngf * 2 ** (n - 1)
        layers = [nn.ConvTranspose2d(nz + embed_dim, width, base, 1, 0, bias=False), nn.BatchNorm2d(width),
                  nn.ReLU(True)]
        for _ in range(n - 1):
            layers += [nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(width // 2),
                       nn.ReLU(True)]
            width //= 2
        layers += [nn.ConvTranspose2d(width, channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z, y):
        h = torch.cat([z, self.embed(y)], dim=1)
        return self.net(h[:, :, None, None])


class ProjectionDiscriminator(nn.Module):
    """Conv(4, 2, 1), LeakyReLU(0.2) → (n − 1) × [Conv(4, 2, 1), BatchNorm, LeakyReLU(0.2)]; the flattened last
    activations are its features f(x); logit = w·f(x) + <embed(class), f(x)> (Miyato & Koyama 2018)."""

    def __init__(self, num_classes: int, channels: int, base: int, n: int, ndf: int):
        super().__init__()
        layers = [nn.Conv2d(channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        width = ndf
        for _ in range(n - 1):
            layers += [nn.Conv2d(width, width * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(width * 2),
                       nn.LeakyReLU(0.2, True)]
            width *= 2
        self.features = nn.Sequential(*layers)
        feature_dim = width * base * base
        self.linear = nn.Linear(feature_dim, 1)
        self.embed = nn.Embedding(num_classes, feature_dim)
        nn.init.normal_(self.embed.weight, std=0.02)

    def forward(self, x, y):
        f = self.features(x).flatten(1)
        logit = self.linear(f).squeeze(1) + (self.embed(y) * f).sum(1)
        return logit, f


def dcgan_init(m: nn.Module) -> None:
    """DCGAN's initialisation (Radford et al. 2016): convolutions N(0, 0.02), BatchNorm weights N(1, 0.02)."""
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


class PerceptualFeatures(nn.Module):
    """Mean VGG16 features of images in [-1, 1] (1 or 3 channels), ImageNet-normalised."""

    def __init__(self, features: nn.Module, device):
        super().__init__()
        self.features = features
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406], device=device).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225], device=device).view(1, 3, 1, 1))

    def forward(self, x):
        x = (x + 1) / 2
        if x.shape[1] != 3:
            x = x[:, :1].expand(-1, 3, -1, -1)
        return self.features((x - self.mean) / self.std).mean(dim=(2, 3))
