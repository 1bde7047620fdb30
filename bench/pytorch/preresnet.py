"""The PreResNet of ilr (src/model/preresnet.rs) in PyTorch: pre-activation blocks, option-A
shortcuts, widths 16/32/64, no conv bias, final BN-ReLU-avgpool-linear.

Block: a = relu(bn1(x)); h = conv1(a); h2 = relu(bn2(h)); out = conv2(h2) + shortcut(x), where the
shortcut is x, or x subsampled by the stride with its channels zero-padded to c_out, the input
channels placed at offset (c_out - c_in) // 2 (option A).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.stride, self.c_in, self.c_out = stride, c_in, c_out

    def shortcut(self, x):
        if self.stride == 1 and self.c_in == self.c_out:
            return x
        y = x[:, :, :: self.stride, :: self.stride]
        lo = (self.c_out - self.c_in) // 2
        return F.pad(y, (0, 0, 0, 0, lo, self.c_out - self.c_in - lo))

    def forward(self, x):
        h = self.conv1(F.relu(self.bn1(x)))
        return self.conv2(F.relu(self.bn2(h))) + self.shortcut(x)


class PreResNet(nn.Module):
    def __init__(self, depth, classes=10, in_channels=3, width=1.0):
        super().__init__()
        assert depth >= 8 and (depth - 2) % 6 == 0, "depth must be 6n+2"
        n = (depth - 2) // 6
        widths = [max(1, round(c * width)) for c in (16, 32, 64)]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        blocks, c_in = [], widths[0]
        for s, c_out in enumerate(widths):
            for i in range(n):
                blocks.append(Block(c_in, c_out, 2 if s > 0 and i == 0 else 1))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(c_in)
        self.fc = nn.Linear(c_in, classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")

    def forward(self, x):
        x = self.blocks(self.conv1(x))
        x = F.relu(self.bn(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


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
