"""The PreResNet of ilr (src/model/preresnet.rs) in PyTorch: pre-activation blocks, option-A or
BN-projection shortcuts, widths 16/32/64 times a multiplier, no conv bias, final BN-ReLU-avgpool-linear.

Block: a = relu(bn1(x)); h = conv1(a); h2 = relu(bn2(h)); out = conv2(h2) + shortcut, where the
shortcut is x; or (option A) x subsampled by the stride with its channels zero-padded to c_out, the
input channels placed at offset (c_out - c_in) // 2; or (BN projection) BN(conv1x1(a)).

The module names are ilr's checkpoint keys (conv1, layer{1,2,3}.{i}.bn1/conv1/bn2/conv2/shortcut.{0,1},
bn, fc), so `load_state_dict` takes an ilr model.safetensors as it is (examples/pytorch_load.py).
The bench (bench_torch.py) and the loader share this one definition.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, c_in, c_out, stride, shortcut="option-a", eps=1e-5, momentum=0.1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in, eps=eps, momentum=momentum)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out, eps=eps, momentum=momentum)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.kind = "identity" if stride == 1 and c_in == c_out else shortcut
        self.stride, self.pad = stride, ((c_out - c_in) // 2, c_out - c_in - (c_out - c_in) // 2)
        if self.kind == "bn-projection":  # 1×1 strided conv on the pre-activation, then BN
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, 0, bias=False), nn.BatchNorm2d(c_out, eps=eps, momentum=momentum)
            )

    def forward(self, x):
        a = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(a))))
        if self.kind == "identity":
            return out + x
        if self.kind == "option-a":  # subsample, zero-pad the new channels on both sides
            return out + F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, *self.pad))
        return out + self.shortcut(a)


class PreResNet(nn.Module):
    def __init__(self, depth=20, width=1.0, shortcut="option-a", classes=10, in_channels=3, bn_eps=1e-5, bn_momentum=0.1):
        super().__init__()
        assert depth >= 8 and (depth - 2) % 6 == 0, "depth must be 6n+2"
        n = (depth - 2) // 6
        widths = [max(1, round(c * width)) for c in (16, 32, 64)]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        c_in = widths[0]
        for s, c_out in enumerate(widths):
            blocks = []
            for i in range(n):
                blocks.append(Block(c_in, c_out, 2 if s > 0 and i == 0 else 1, shortcut, bn_eps, bn_momentum))
                c_in = c_out
            setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
        self.bn = nn.BatchNorm2d(c_in, eps=bn_eps, momentum=bn_momentum)
        self.fc = nn.Linear(c_in, classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")

    def forward(self, x):
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        return self.fc(F.relu(self.bn(x)).mean(dim=(2, 3)))


def bn_input_shapes(model, batch, size=32):
    """The (N, C, H, W) of every BatchNorm's input in one forward pass, in order."""
    shapes = []
    hooks = [m.register_forward_pre_hook(lambda _m, a: shapes.append(tuple(a[0].shape)))
             for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(batch, 3, size, size, device=next(model.parameters()).device))
    finally:
        model.train()
        for h in hooks:
            h.remove()
    return shapes
