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
from safetensors.torch import load_file

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "peers" / "pytorch"))
from preresnet import PreResNet  # noqa: E402  (the model the PyTorch bench trains too)


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
