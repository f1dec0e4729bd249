"""Train the bundled digits CNN and write its weights into the package.

    python scripts/train_digits.py [--epochs 60] [--out neuronviz/models/digits_cnn.pt]

Deterministic on the CPU (fixed seeds, one thread). Prints the held-out accuracy.
"""

from __future__ import annotations

import argparse
import pathlib

import torch
import torch.nn.functional as F

from neuronviz.data import load_digits
from neuronviz.models.digits import WEIGHTS_FILE, DigitsCNN


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model.eval()(x).argmax(1) == y).float().mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--out", default=str(pathlib.Path(__file__).parent.parent / "neuronviz" / "models" / WEIGHTS_FILE))
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    x_train, y_train = load_digits("train")
    x_test, y_test = load_digits("test")
    model = DigitsCNN()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.epochs)
    g = torch.Generator().manual_seed(0)
    for epoch in range(args.epochs):
        model.train()
        for idx in torch.randperm(len(y_train), generator=g).split(64):
            xb = x_train[idx]
            shift = torch.randint(-1, 2, (2,), generator=g).tolist()  # small translations
            xb = torch.roll(xb, shifts=shift, dims=(2, 3))
            loss = F.cross_entropy(model(xb), y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        if (epoch + 1) % 10 == 0:
            print(f"epoch {epoch + 1}: train {accuracy(model, x_train, y_train):.4f}, test {accuracy(model, x_test, y_test):.4f}")
    torch.save({k: v.clone() for k, v in model.state_dict().items()}, args.out)
    print(f"held-out accuracy {accuracy(model, x_test, y_test):.4f} on {len(y_test)} digits; wrote {args.out}")


if __name__ == "__main__":
    main()
