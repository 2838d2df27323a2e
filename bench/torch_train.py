"""Training throughput of PyTorch on autoprune's zoo architectures, for bench/compare.sh.

    /usr/bin/python3 bench/torch_train.py --model lenet5 --steps 300 --batch 64 --threads 2

Adam (lr 1e-3), cross-entropy, random 28x28 gray images with random labels (data loading
is not timed on either side); prints "IMG_PER_S" after a warm-up of 20 steps. The networks
mirror nn/zoo: the same layers, widths, paddings and activations.
"""
import argparse
import time

import torch
from torch import nn


def conv_bn(cin, cout):
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


class Residual(nn.Module):
    """nn/zoo's basic block: conv-BN-ReLU, conv-BN, plus the shortcut (a strided 1x1 conv-BN
    when the shape changes), then ReLU."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.main = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                                  nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return torch.relu(self.main(x) + (x if self.down is None else self.down(x)))


def separable(cin, cout, stride):
    return [nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.ReLU6(),
            nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU6()]


def build(name):
    if name == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(),
                             nn.Linear(100, 10, bias=False))
    if name == "lenet5":
        return nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                             nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
                             nn.Linear(84, 10, bias=False))
    if name == "vgg-small":
        return nn.Sequential(*conv_bn(1, 32), *conv_bn(32, 32), nn.MaxPool2d(2),
                             *conv_bn(32, 64), *conv_bn(64, 64), nn.MaxPool2d(2), nn.Flatten(),
                             nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10, bias=False))
    if name == "resnet-small":
        return nn.Sequential(*conv_bn(1, 16), Residual(16, 16, 1), Residual(16, 32, 2), Residual(32, 64, 2),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10, bias=False))
    if name == "mobilenet-small":
        return nn.Sequential(nn.Conv2d(1, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6(),
                             *separable(16, 32, 1), *separable(32, 64, 2), *separable(64, 64, 1),
                             *separable(64, 128, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Linear(128, 10, bias=False))
    raise SystemExit(f"unknown model {name!r} (mlp, lenet5, vgg-small, resnet-small, mobilenet-small)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="lenet5")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    model = build(a.model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    x = torch.rand(a.batch, 1, 28, 28)
    y = torch.randint(0, 10, (a.batch,))

    def step():
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()

    for _ in range(20):
        step()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    print(f"{a.steps * a.batch / (time.perf_counter() - t0):.0f}")


if __name__ == "__main__":
    main()
