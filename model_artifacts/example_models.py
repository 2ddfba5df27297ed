"""Hand-written example classifiers (PyPI's torchvision does not import beside torch 2.13 here).

A ResNet-18-style network in plain torch.nn, written so that both torch.jit.trace and
torch.jit.script accept it. Weights are random from a fixed seed: the point is the serving path,
not accuracy.
"""
from typing import Callable, Dict, List

import torch
from torch import nn

SEED = 0


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """Identity, or a strided 1x1 projection when the block changes size."""
    if stride != 1 or in_channels != out_channels:
        return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels))
    return nn.Sequential()


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _shortcut(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """ResNet-50's block: 1x1 reduce, 3x3, 1x1 expand (x4)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        inner = out_channels // 4
        self.conv1 = nn.Conv2d(in_channels, inner, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(inner)
        self.conv2 = nn.Conv2d(inner, inner, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(inner)
        self.conv3 = nn.Conv2d(inner, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _shortcut(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.shortcut(x))


class ResNetClassifier(nn.Module):
    def __init__(self, widths: List[int], blocks_per_stage: List[int], num_classes: int, bottleneck: bool = False):
        super().__init__()
        stem_width = 64 if bottleneck else widths[0]
        self.stem = nn.Sequential(
            nn.Conv2d(3, stem_width, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(stem_width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        layers = []
        in_channels = stem_width
        for stage, (width, blocks) in enumerate(zip(widths, blocks_per_stage)):
            for block in range(blocks):
                stride = 2 if stage > 0 and block == 0 else 1
                layers.append((Bottleneck if bottleneck else BasicBlock)(in_channels, width, stride))
                in_channels = width
        self.stages = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return self.fc(torch.flatten(self.pool(x), 1))


def _randomize_batchnorm(model: nn.Module, generator: torch.Generator) -> None:
    # Fresh BatchNorm statistics are 0/1, which makes a random network nearly constant; vary them.
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)


def _seeded(factory: Callable[[], nn.Module]) -> nn.Module:
    torch.manual_seed(SEED)
    model = factory()
    with torch.no_grad():
        _randomize_batchnorm(model, torch.Generator().manual_seed(SEED))
    return model.eval()


EXAMPLE_MODELS: Dict[str, Callable[[], nn.Module]] = {
    # ResNet-18 layout, ImageNet-sized head: the example that make synth packages.
    "example-resnet": lambda: _seeded(lambda: ResNetClassifier([64, 128, 256, 512], [2, 2, 2, 2], 1000)),
    # ResNet-50 layout (bottleneck blocks): the size the benchmarks measure.
    "example-resnet-50": lambda: _seeded(lambda: ResNetClassifier([256, 512, 1024, 2048], [3, 4, 6, 3], 1000, bottleneck=True)),
    # Same code, a fraction of the size: keeps tests fast.
    "example-resnet-tiny": lambda: _seeded(lambda: ResNetClassifier([8, 16, 16, 32], [1, 1, 1, 1], 10)),
}


def build_example_model(name: str) -> nn.Module:
    return EXAMPLE_MODELS[name]()
