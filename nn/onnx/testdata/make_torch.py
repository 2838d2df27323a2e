"""Makes the PyTorch exports that nn/onnx's TestImportPyTorch reads.

Run from nn/onnx with Debian's python3-torch: /usr/bin/python3 testdata/make_torch.py
Each network is exported with torch.onnx.export (dynamic batch) to testdata/torch/NAME.onnx,
with testdata/torch/NAME.json holding a random input batch and PyTorch's logits for it.
"""
import json
import os

import torch
from torch import nn

torch.manual_seed(7)
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch")


class LeNet5(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


class LeNet5View(LeNet5):
    """LeNet-5 flattened with x.view(x.size(0), -1): the shape is computed in the graph
    (Shape, Gather, Unsqueeze, Concat, Reshape)."""

    def forward(self, x):
        x = nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = x.view(x.size(0), -1)
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def conv_bn(cin, cout, k=3, stride=1, groups=1, act=nn.ReLU):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class VGG(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(conv_bn(1, 8), conv_bn(8, 8), nn.MaxPool2d(2),
                                      conv_bn(8, 16), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Linear(16 * 7 * 7, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 10))

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.a = conv_bn(cin, cout, stride=stride)
        self.b = conv_bn(cout, cout, act=None)
        self.down = None if stride == 1 and cin == cout else conv_bn(cin, cout, k=1, stride=stride, act=None)

    def forward(self, x):
        skip = x if self.down is None else self.down(x)
        return torch.relu(self.b(self.a(x)) + skip)


class ResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = conv_bn(1, 8)
        self.layer1 = Block(8, 8, 1)
        self.layer2 = Block(8, 16, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.pool(self.layer2(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(x, 1))


class InvertedResidual(nn.Module):
    def __init__(self, c, expand):
        super().__init__()
        h = c * expand
        self.body = nn.Sequential(conv_bn(c, h, k=1, act=nn.ReLU6), conv_bn(h, h, groups=h, act=nn.ReLU6),
                                  conv_bn(h, c, k=1, act=None))

    def forward(self, x):
        return x + self.body(x)


class MobileNetV2(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = conv_bn(1, 8, stride=2, act=nn.ReLU6)
        self.block = InvertedResidual(8, 4)
        self.pool = nn.AvgPool2d(2)
        self.head = conv_bn(8, 16, k=1, act=nn.ReLU6)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.head(self.pool(self.block(self.stem(x))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class Activations(nn.Module):
    """The element-wise activations beyond ReLU: LeakyReLU, Hardswish (MobileNetV3),
    Hardsigmoid and Sigmoid, after convolutions with batch norms and after a linear layer."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(conv_bn(1, 8, act=lambda: nn.LeakyReLU(0.1)), nn.MaxPool2d(2),
                                      conv_bn(8, 8, act=nn.Hardswish), conv_bn(8, 8, act=nn.Hardsigmoid),
                                      nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Linear(8 * 7 * 7, 16), nn.Sigmoid(), nn.Linear(16, 10))

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


class Inception(nn.Module):
    """Two branches joined by channels (torch.cat), as in Inception or a feature pyramid."""

    def __init__(self):
        super().__init__()
        self.stem = conv_bn(1, 8)
        self.a = conv_bn(8, 4, k=1)
        self.b = conv_bn(8, 4)
        self.head = conv_bn(8, 16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.stem(x)
        x = self.head(torch.cat([self.a(x), self.b(x)], 1))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def randomize_bn(model):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
            m.running_mean.data.uniform_(-0.1, 0.1)
            m.running_var.data.uniform_(0.5, 1.5)


def export(name, model, opset, fold=True):
    model.eval()
    randomize_bn(model)
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        y = model(x)
    path = os.path.join(OUT, name + ".onnx")
    # In eval mode the exporter folds batch norms into the convolutions; PRESERVE keeps them.
    torch.onnx.export(model, x, path, opset_version=opset, input_names=["input"], output_names=["logits"],
                      do_constant_folding=fold, training=torch.onnx.TrainingMode.EVAL if fold else torch.onnx.TrainingMode.PRESERVE,
                      dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}})
    with open(os.path.join(OUT, name + ".json"), "w") as f:
        json.dump({"shape": list(x.shape), "input": x.flatten().tolist(),
                   "logits": y.flatten().tolist()}, f)
        f.write("\n")


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    export("lenet5-opset11", LeNet5(), 11)
    export("vgg-bn-opset13", VGG(), 13, fold=False)
    export("resnet-opset17", ResNet(), 17)
    export("mobilenetv2-opset13", MobileNetV2(), 13)
    torch.manual_seed(8)
    export("activations-opset13", Activations(), 13, fold=False)
    torch.manual_seed(8)
    export("activations-opset14", Activations(), 14, fold=False)
    torch.manual_seed(9)
    export("inception-opset13", Inception(), 13)
    torch.manual_seed(10)
    export("lenet5-view-opset13", LeNet5View(), 13)
