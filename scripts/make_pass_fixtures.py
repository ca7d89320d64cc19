#!/usr/bin/python3
"""make_pass_fixtures.py — a small PyTorch-exported model for the pass tests (not run by CI).

Run with Debian's python3 (python3-torch, python3-onnx) from the repository root:

    /usr/bin/python3 scripts/make_pass_fixtures.py

It writes tests/data/passes/torch_shapes/model.onnx and test_data_set_0/{input_0,output_0}.pb
(the ONNX backend-test layout): a conv net exported by torch.onnx.export at opset 13 with
constant folding off, so the graph keeps what PyTorch's tracer records:
  - Shape -> Gather -> Unsqueeze -> Concat -> Reshape chains (x.view(x.size(0), -1));
  - a Resize whose sizes come from Shape -> Slice/Gather -> Mul -> Concat -> Cast
    (F.interpolate(size=...) from the input's size);
  - Conv -> BatchNormalization (random running statistics), grouped ConvTranspose -> BN,
    Linear (Gemm, transB=1) -> BatchNorm1d, all in inference form (TrainingMode.PRESERVE
    on an eval() module);
  - a no-op reshape (y.reshape(y.shape[0], 10));
and, added to the exported graph afterwards (PyTorch drops them in eval mode), an Identity
and a Dropout (opset 13, no training_mode input: the identity at inference).
tests/test_passes.c checks the default pipeline folds all of that and still computes
output_0.pb.
"""
import os

import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F
from onnx import helper, numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "data", "passes", "torch_shapes")


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.up = nn.ConvTranspose2d(8, 4, 2, stride=2, groups=2, bias=False)
        self.bn2 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, stride=2, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 8 * 8, 10)
        self.bn4 = nn.BatchNorm1d(10)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.interpolate(y, size=(x.shape[2] // 2, x.shape[3] // 2), mode="nearest")
        y = F.relu(self.bn2(self.up(y)))
        y = F.relu(self.bn3(self.conv2(y)))
        y = y.view(y.size(0), -1)
        y = self.bn4(self.fc(y))
        return y.reshape(y.shape[0], 10)


def randomize_bn(m, g):
    for mod in m.modules():
        if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
            c = mod.num_features
            mod.weight.data = torch.rand(c, generator=g) + 0.5
            mod.bias.data = torch.randn(c, generator=g) * 0.2
            mod.running_mean.data = torch.randn(c, generator=g) * 0.3
            mod.running_var.data = torch.rand(c, generator=g) + 0.5


def add_identity_and_dropout(model):
    """Routes the network's input through Identity and its output through Dropout."""
    gr = model.graph
    inp, out = gr.input[0].name, gr.output[0].name
    for n in gr.node:
        for i, name in enumerate(n.input):
            if name == inp:
                n.input[i] = "input_copy"
        for i, name in enumerate(n.output):
            if name == out:
                n.output[i] = "pre_dropout"
    gr.node.insert(0, helper.make_node("Identity", [inp], ["input_copy"], name="copy_input"))
    gr.node.append(helper.make_node("Dropout", ["pre_dropout"], [out], name="dropout"))


def main():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    net = Net()
    randomize_bn(net, g)
    net.eval()
    x = torch.randn(2, 3, 16, 16, generator=g)
    with torch.no_grad():
        want = net(x)
    os.makedirs(os.path.join(OUT, "test_data_set_0"), exist_ok=True)
    path = os.path.join(OUT, "model.onnx")
    torch.onnx.export(net, (x,), path, opset_version=13, do_constant_folding=False,
                      training=torch.onnx.TrainingMode.PRESERVE,
                      input_names=["input"], output_names=["output"])
    model = onnx.load(path)
    add_identity_and_dropout(model)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    ops = sorted({n.op_type for n in model.graph.node})
    print("ops:", ", ".join(ops), "—", len(model.graph.node), "nodes")
    for name, t in (("input_0", x), ("output_0", want)):
        pb = numpy_helper.from_array(t.numpy().astype(np.float32),
                                     "input" if name == "input_0" else "output")
        with open(os.path.join(OUT, "test_data_set_0", name + ".pb"), "wb") as f:
            f.write(pb.SerializeToString())


if __name__ == "__main__":
    main()
