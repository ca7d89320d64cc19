#!/usr/bin/python3
"""make_fusion_fixtures.py — the study's network exported by PyTorch, for the fusion tests and
the fusion benchmark (not run by CI).

Run with Debian's python3 (python3-torch, python3-onnx) from the repository root:

    /usr/bin/python3 scripts/make_fusion_fixtures.py            # the committed test fixture
    /usr/bin/python3 scripts/make_fusion_fixtures.py --full OUT.onnx [--batch 8]

The network is ResNet-18 (BasicBlocks [2, 2, 2, 2], torchvision's layout, stem width W)
+ C-Net (global average pool -> flatten -> Linear -> ReLU -> Linear K) + a 5-block SPN
(nn.Upsample(scale_factor=2) -> Conv 3x3 without bias -> BatchNorm -> ReLU, channels
halving from 8W, then Conv 1x1 -> 1), outputs `logits` and `saliency`; BatchNorm statistics
are random so folding them is not the identity.

The default writes tests/data/fusion/torch_spn/model.onnx and test_data_set_0/{input_0,
output_0, output_1}.pb (the ONNX backend-test layout): W = 8, 64x64, batch 1, exported at
opset 13 with constant folding off and BatchNorm kept (TrainingMode.PRESERVE on an eval()
module), so the graph is as noisy as PyTorch makes it: Resize scales from Constant -> Concat
chains, and the last block upsamples with F.interpolate(size=(2h, 2w)) computed from the
input's shape (Shape -> Gather -> Mul -> Unsqueeze -> Concat -> Resize sizes).
tests/test_fusion.c checks that the default pipeline fuses all 5 upsample blocks, every
Conv + BN (+ ReLU) and every residual add, and still computes the recorded outputs.

--full writes the same network at W = 64, 224x224 (the study's size) with torch's default
export (constant folding on: BatchNorm folded into the convolutions, Resize scales from a
Constant); bench/fusion_bench.sh runs kiln opt --check and the benchmark on it.
"""
import argparse
import os

import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F
from onnx import numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "data", "fusion", "torch_spn")


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        skip = x if self.downsample is None else self.downsample(x)
        return F.relu(y + skip)


class SpnBlock(nn.Module):
    def __init__(self, cin, cout, by_size):
        super().__init__()
        self.by_size = by_size
        self.up = nn.Upsample(scale_factor=2)
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        if self.by_size:  # sizes computed from the input's shape
            x = F.interpolate(x, size=(x.shape[2] * 2, x.shape[3] * 2), mode="nearest")
        else:
            x = self.up(x)
        return F.relu(self.bn(self.conv(x)))


class Net(nn.Module):
    def __init__(self, width, classes, hidden):
        super().__init__()
        w = width
        self.conv1 = nn.Conv2d(3, w, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        layers, cin = [], w
        for i, cout in enumerate([w, 2 * w, 4 * w, 8 * w]):
            stride = 1 if i == 0 else 2
            layers.append(nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.fc1 = nn.Linear(8 * w, hidden)
        self.fc2 = nn.Linear(hidden, classes)
        chans = [8 * w // (2 ** i) for i in range(6)]
        self.spn = nn.Sequential(*[SpnBlock(chans[i], chans[i + 1], i == 4) for i in range(5)])
        self.head = nn.Conv2d(chans[5], 1, 1)

    def forward(self, x):
        y = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        f = self.layer4(self.layer3(self.layer2(self.layer1(y))))
        h = torch.flatten(F.adaptive_avg_pool2d(f, 1), 1)
        logits = self.fc2(F.relu(self.fc1(h)))
        return logits, self.head(self.spn(f))


def randomize_bn(m, g, size):
    """Running statistics from one batch of random images (so activations stay alive through
    the 20-odd layers), then random scales and shifts."""
    bns = [mod for mod in m.modules() if isinstance(mod, nn.BatchNorm2d)]
    for mod in bns:
        mod.momentum = 1.0
    m.train()
    with torch.no_grad():
        m(torch.randn(4, 3, size, size, generator=g))
    for mod in bns:
        c = mod.num_features
        mod.weight.data = torch.rand(c, generator=g) + 0.5
        mod.bias.data = torch.rand(c, generator=g) * 0.4 - 0.1
        mod.momentum = 0.1


def build(width, size, seed=0):
    torch.manual_seed(seed)
    net = Net(width, 8, 16 if width < 64 else 1024)
    randomize_bn(net, torch.Generator().manual_seed(seed + 1), size)
    return net.eval()


def write_pb(t, name, path):
    with open(path, "wb") as f:
        f.write(numpy_helper.from_array(t.numpy().astype(np.float32), name).SerializeToString())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--full", metavar="OUT.onnx", help="write the full-size network here")
    ap.add_argument("--batch", type=int, default=1)
    args = ap.parse_args()
    names = dict(input_names=["image"], output_names=["logits", "saliency"])
    if args.full:
        net = build(64, 224)
        x = torch.randn(args.batch, 3, 224, 224)
        torch.onnx.export(net, (x,), args.full, opset_version=13, **names)
        model = onnx.load(args.full)
        print("wrote", args.full, "-", len(model.graph.node), "nodes")
        return
    net = build(8, 64)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logits, saliency = net(x)
    os.makedirs(os.path.join(OUT, "test_data_set_0"), exist_ok=True)
    path = os.path.join(OUT, "model.onnx")
    torch.onnx.export(net, (x,), path, opset_version=13, do_constant_folding=False,
                      training=torch.onnx.TrainingMode.PRESERVE, **names)
    model = onnx.load(path)
    onnx.checker.check_model(model)
    ops = {}
    for n in model.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    print(len(model.graph.node), "nodes:", ", ".join(f"{k} {v}" for k, v in sorted(ops.items())))
    d = os.path.join(OUT, "test_data_set_0")
    write_pb(x, "image", os.path.join(d, "input_0.pb"))
    write_pb(logits, "logits", os.path.join(d, "output_0.pb"))
    write_pb(saliency, "saliency", os.path.join(d, "output_1.pb"))


if __name__ == "__main__":
    main()
