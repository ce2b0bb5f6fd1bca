"""The image models, each a plain ``nn.Sequential`` of standard layers.

No custom ``forward`` anywhere: the CLIP slicer walks the Sequential and shrinks a layer's outputs
together with the next layer's inputs, which it can only do for the standard layers used here
(Conv2d, ReLU, MaxPool2d, Flatten, Linear). Exact parameter counts (weights + biases), asserted by
``tests/test_models.py``:

=============  ==========================================================  ===========
model          layout                                                      parameters
=============  ==========================================================  ===========
digits_mlp     Flatten, FC64, FC10 on 1x8x8                                      4,810
digits_cnn     conv16 3x3, conv32 3x3, pool, FC64, FC10 on 1x8x8                38,282
femnist_cnn    conv16 5x5, pool, conv64 5x5, pool, FC120, FC62 on 1x28x28     410,022
vgg9           conv32, conv32, pool, conv64, conv64, pool, conv128, conv128,
               pool, FC512, FC256, FC10 on 3x32x32 (3x3 convs)              1,469,994
=============  ==========================================================  ===========

Convolutions are padded to keep the spatial size ("same", as in LEAF's FEMNIST CNN and FLuID's VGG-9),
so only the pools shrink the feature maps.
"""

from __future__ import annotations

from torch import nn

__all__ = ["digits_cnn", "digits_mlp", "femnist_cnn", "vgg9"]


def digits_mlp(in_features: int = 64, hidden: int = 64, num_classes: int = 10) -> nn.Sequential:
    """A one-hidden-layer perceptron: the smallest model that reaches ~95 % on digits."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_features, hidden),
        nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )


def digits_cnn(in_channels: int = 1, num_classes: int = 10) -> nn.Sequential:
    """Two 3x3 convolutions and one pool on 8x8 digits (8x8 -> 4x4), then two linear layers."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 64),
        nn.ReLU(),
        nn.Linear(64, num_classes),
    )


def femnist_cnn(in_channels: int = 1, num_classes: int = 62) -> nn.Sequential:
    """LEAF's FEMNIST CNN shape as CLIP uses it: 28x28 -> 14x14 -> 7x7, FC120, FC62."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 16, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 64, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 7 * 7, 120),
        nn.ReLU(),
        nn.Linear(120, num_classes),
    )


def vgg9(in_channels: int = 3, num_classes: int = 10) -> nn.Sequential:
    """FLuID's and CLIP's VGG-9 for 32x32 images: six 3x3 convolutions in three pooled stages."""
    layers: list[nn.Module] = []
    c = in_channels
    for width in (32, 64, 128):
        for _ in range(2):
            layers += [nn.Conv2d(c, width, 3, padding=1), nn.ReLU()]
            c = width
        layers.append(nn.MaxPool2d(2))
    layers += [
        nn.Flatten(),
        nn.Linear(128 * 4 * 4, 512),
        nn.ReLU(),
        nn.Linear(512, 256),
        nn.ReLU(),
        nn.Linear(256, num_classes),
    ]
    model = nn.Sequential(*layers)
    _vgg_init(model)
    return model


def _vgg_init(model: nn.Sequential) -> None:
    """torchvision's VGG initialisation (He-normal convolutions, small-normal linear layers, zero bias).

    Without BatchNorm, PyTorch's default initialisation shrinks the signal through nine layers and
    SGD sits at chance for several epochs; He initialisation keeps the activations' scale, so VGG-9
    starts learning at once (measured, 5,000 images, SGD lr 0.02 momentum 0.9, test accuracy after
    epochs 1-3: 13, 30, 35 % with it; 10, 11, 22 % with PyTorch's default).
    """
    for m in model:
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)
