"""Load ilr-trained weights into the equivalent PyTorch PreResNet.

    pip install torch safetensors
    python examples/pytorch_load.py RUN_DIR [PARITY.safetensors]

RUN_DIR is an ilr run directory (e.g. DIR/runs/<run-id>); the newest checkpoint's model.safetensors
holds the weights under this module's state_dict keys, BatchNorm buffers included. With a parity
file (cargo run --release --example pytorch_parity -- RUN_DIR), the script also checks that PyTorch's
eval-mode logits match ilr's.
"""
import pathlib
import sys
import tomllib

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file


class Block(nn.Module):
    """Pre-activation block: a = relu(bn1(x)); out = conv2(relu(bn2(conv1(a)))) + shortcut."""

    def __init__(self, c_in, c_out, stride, shortcut, eps, momentum):
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

    def forward(self, x):
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        return self.fc(F.relu(self.bn(x)).mean(dim=(2, 3)))


def load_run(run_dir):
    run_dir = pathlib.Path(run_dir)
    cfg = tomllib.loads((run_dir / "config.toml").read_text())
    m = cfg["model"]
    newest = sorted((run_dir / "checkpoints").glob("step-*/model.safetensors"))[-1]
    state = load_file(newest)
    classes, features = state["fc.weight"].shape
    model = PreResNet(m["depth"], m["width"], m["shortcut"], classes, state["conv1.weight"].shape[1], m["bn_eps"], m["bn_momentum"])
    model.load_state_dict(state)  # strict: every key matches
    return model.eval(), newest


if __name__ == "__main__":
    model, path = load_run(sys.argv[1])
    print(f"loaded {path}: {sum(p.numel() for p in model.parameters())} parameters")
    if len(sys.argv) > 2:
        ref = load_file(sys.argv[2])
        with torch.no_grad():
            logits = model(ref["images"])
        err = (logits - ref["logits"]).abs().max().item()
        agree = (logits.argmax(1) == ref["logits"].argmax(1)).float().mean().item()
        print(f"max |logit difference| vs ilr: {err:.2e}; arg-max agreement {100 * agree:.1f}%")
        sys.exit(0 if err < 1e-3 else 1)
