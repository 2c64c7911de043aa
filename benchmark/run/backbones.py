"""Backbones: timm models by name, with the input adaptation each entry declares for small images."""

from __future__ import annotations

import operator
from pathlib import Path

from benchmark.core.errors import UserError


class TimmBackbone:
    """A timm architecture (random init unless ``pretrained_file`` names local weights) adapted to small inputs.

    Config of the registry entry:
      model_name: timm name (``timm.list_models`` spells it)
      small_input: {below: 64, stride1: [conv1], identity: [maxpool]}
          for inputs smaller than ``below`` px, set the stride of the named convolutions to 1 and replace the
          named pooling layers by identity (the CIFAR-style stem: 28 px stays 28 px instead of becoming 7 px)
      resize_below: N — inputs smaller than N px are bilinearly resized to N px inside the model
      patch_size: {28: 4, 64: 8, ...} — per-resolution patch size for vision transformers (img_size is passed too)
      timm_kwargs: extra keyword arguments for timm.create_model
      pretrained_file: optional local .safetensors/.pth weights (never downloaded)
    """

    def __init__(self, name: str, model_name: str, small_input: dict | None = None, resize_below: int = 0,
                 patch_size: dict | None = None, timm_kwargs: dict | None = None, pretrained_file: str | None = None):
        self.name = name
        self.model_name = model_name
        self.small_input = small_input or {}
        self.resize_below = int(resize_below)
        self.patch_size = {int(k): int(v) for k, v in (patch_size or {}).items()}
        self.timm_kwargs = dict(timm_kwargs or {})
        self.pretrained_file = pretrained_file

    def adaptation(self, image_size: int) -> str:
        """A short description of what is done for this resolution (recorded with every result)."""
        if self.resize_below and image_size < self.resize_below:
            return f"resize {image_size}->{self.resize_below}"
        if self.small_input and image_size < self.small_input.get("below", 0):
            return "small-input stem"
        if self.patch_size:
            return f"patch {self.patch_size.get(image_size, '?')}"
        return "none"

    def build(self, in_chans: int, num_classes: int, image_size: int):
        import timm
        import torch.nn as nn

        kwargs = dict(self.timm_kwargs)
        if self.patch_size:
            if image_size not in self.patch_size:
                raise UserError(f"backbone {self.name!r} declares no patch size for {image_size} px; "
                                f"declared: {sorted(self.patch_size)}.")
            kwargs.update(img_size=image_size, patch_size=self.patch_size[image_size])
        model = timm.create_model(self.model_name, pretrained=False, in_chans=in_chans, num_classes=num_classes,
                                  **kwargs)
        if self.pretrained_file:
            self._load_local_weights(model)
        if self.small_input and image_size < self.small_input.get("below", 0):
            for path in self.small_input.get("stride1", []):
                conv = operator.attrgetter(path)(model)
                conv.stride = (1,) * len(conv.stride)
            for path in self.small_input.get("identity", []):
                parent_path, _, attr = path.rpartition(".")
                parent = operator.attrgetter(parent_path)(model) if parent_path else model
                setattr(parent, attr, nn.Identity())
        if self.resize_below and image_size < self.resize_below:
            from benchmark.run.backbone_layers import ResizeInput

            model = ResizeInput(model, self.resize_below)
        return model

    def _load_local_weights(self, model) -> None:
        import torch

        path = Path(self.pretrained_file).expanduser()
        if not path.is_file():
            raise UserError(f"backbone {self.name!r}: pretrained_file {path} does not exist (weights are never "
                            "downloaded; put the file there or remove 'pretrained_file').")
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        model_state = model.state_dict()
        compatible = {k: v for k, v in state.items() if k in model_state and model_state[k].shape == v.shape}
        model.load_state_dict(compatible, strict=False)

