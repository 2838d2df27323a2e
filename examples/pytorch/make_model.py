"""Bring your own model and data, end to end: trains a small CNN with batch norm on
Fashion-MNIST in PyTorch, exports it to ONNX, and writes the data as a PNG image folder
(ImageFolder layout) plus the test set as NumPy arrays for ONNX Runtime.

    /usr/bin/python3 examples/pytorch/make_model.py OUT   # Debian's python3-torch

OUT/net.onnx, OUT/fashion-png/{train,test}/CLASS/*.png, OUT/test_images.npy, OUT/test_labels.npy
"""
import gzip
import os
import sys

import numpy as np
import torch
from PIL import Image
from torch import nn

SRC = "/usr/share/datasets/fashion-mnist"  # apt-get install dataset-fashion-mnist
CLASSES = ["0-tshirt", "1-trouser", "2-pullover", "3-dress", "4-coat",
           "5-sandal", "6-shirt", "7-sneaker", "8-bag", "9-boot"]


def idx(name):
    with gzip.open(os.path.join(SRC, name)) as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape).copy()


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        def block(cin, cout):
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
        self.features = nn.Sequential(*block(1, 16), *block(16, 16), nn.MaxPool2d(2),
                                      *block(16, 32), *block(32, 32), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Linear(32 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


def main(out):
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(1)
    xtr, ytr = idx("train-images-idx3-ubyte.gz"), idx("train-labels-idx1-ubyte.gz")
    xte, yte = idx("t10k-images-idx3-ubyte.gz"), idx("t10k-labels-idx1-ubyte.gz")
    for split, xs, ys in (("train", xtr, ytr), ("test", xte, yte)):
        for c in CLASSES:
            os.makedirs(os.path.join(out, "fashion-png", split, c), exist_ok=True)
        for i, (x, y) in enumerate(zip(xs, ys)):
            Image.fromarray(x).save(os.path.join(out, "fashion-png", split, CLASSES[y], f"{i:05d}.png"))
    np.save(os.path.join(out, "test_images.npy"), xte)
    np.save(os.path.join(out, "test_labels.npy"), yte.astype(np.int64))

    model = Net()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x = torch.from_numpy(xtr).float().div(255).unsqueeze(1)
    y = torch.from_numpy(ytr).long()
    for epoch in range(2):
        model.train()
        perm = torch.randperm(len(x))
        for b in range(0, len(x), 64):
            i = perm[b:b + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[i]), y[i]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        xt = torch.from_numpy(xte).float().div(255).unsqueeze(1)
        acc = (model(xt).argmax(1).numpy() == yte).mean()
    print(f"PyTorch test accuracy {100 * acc:.2f} %")
    torch.onnx.export(model, xt[:1], os.path.join(out, "net.onnx"), opset_version=13,
                      input_names=["input"], output_names=["logits"], dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
                      training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "byo")
