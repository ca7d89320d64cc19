#!/usr/bin/python3
"""make_fixtures.py — PyTorch reference fixtures for kiln's model tests (not run by CI).

Run with Debian's python3 (python3-torch, python3-torchvision, python3-onnx) from the
repository root after building kiln:

    /usr/bin/python3 scripts/make_fixtures.py --kiln build/kiln

It writes
  tests/data/resnet_narrow/   a narrow torchvision-style ResNet-18 (8-channel stem,
                              stages 8/16/32/64, 10 classes) exported by torch.onnx.export
                              with BatchNorm kept (TrainingMode.PRESERVE) so initializers
                              keep torchvision's names; test_data_set_0/{input_0,output_0}.pb
                              in the ONNX backend-test layout.  Used by the issue-2 frontend
                              test and by the --init-from test.
  tests/data/models/          input.pb and, per variant of kiln's own network, the PyTorch
                              outputs logits.pb and saliency.pb.  kiln builds each variant
                              from its seed (`kiln model ...`); this script loads kiln's
                              weights into an equivalent PyTorch module by initializer name,
                              sets BatchNorm parameters and statistics by bn_formula() (the
                              C test applies the same formula), and runs it.

and checks, without writing anything: every model kiln writes passes onnx.checker and
strict ONNX shape inference; the plain classifiers have torchvision's parameter names,
shapes and counts; --init-from matches a full-size torchvision ResNet-18 export.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from onnx import numpy_helper
from torchvision.models.resnet import BasicBlock, Bottleneck

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The variants of kiln's network the C test (tests/test_models.c, `variants[]`) rebuilds:
# name -> kiln model arguments.  Keep the two lists in step.
VARIANTS = {
    "r18_nearest": "--backbone resnet18 --width 8 --classes 3 --cnet-hidden 16 "
                   "--upsample nearest",
    "r18_bilinear": "--backbone resnet18 --width 8 --classes 3 --cnet-hidden 16 "
                    "--upsample bilinear",
    "r18_bilinear_ac": "--backbone resnet18 --width 8 --classes 3 --cnet-hidden 16 "
                       "--upsample bilinear --align-corners",
    "r50_scales": "--backbone resnet50 --width 4 --classes 5 --cnet-hidden 32 "
                  "--spn-scales 2,2,2,4 --spn-width-cap 24 --upsample bilinear",
    "r34_plain": "--backbone resnet34 --width 4 --classes 4 --cnet-hidden 0 --no-spn",
}
COMMON = "--image-size 64 --batch 2 --seed 7"


def bn_formula(c):
    """Deterministic, non-trivial BatchNorm tensors for c channels (exact integer
    arithmetic, then one rounding to float32; test_models.c computes the same)."""
    i = np.arange(c, dtype=np.int64)
    weight = 0.75 + 0.05 * ((i * 7) % 11)
    bias = 0.02 * ((i * 5) % 13) - 0.12
    mean = 0.03 * ((i * 3) % 7) - 0.09
    var = 0.5 + 0.1 * ((i * 11) % 9)
    return [t.astype(np.float32) for t in (weight, bias, mean, var)]


class ResNetTrunk(nn.Module):
    """torchvision's ResNet with a configurable stem width (64 is torchvision's), the
    same module names, optionally without avgpool/fc."""

    def __init__(self, block, layers, width=64, num_classes=None):
        super().__init__()
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(block, width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(block, width * 8, layers[3], stride=2)
        self.feat_channels = width * 8 * block.expansion
        if num_classes:
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(self.feat_channels, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, block, planes, blocks, stride=1):  # torchvision's, groups=1
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def trunk(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x):
        return self.fc(torch.flatten(self.avgpool(self.trunk(x)), 1))


class SPNBlock(nn.Module):
    def __init__(self, cin, cout, scale, mode, align_corners):
        super().__init__()
        self.scale, self.mode, self.align = scale, mode, align_corners
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        if self.mode == "nearest":
            x = F.interpolate(x, scale_factor=self.scale, mode="nearest")
        else:
            x = F.interpolate(x, scale_factor=self.scale, mode="bilinear",
                              align_corners=self.align)
        return F.relu(self.bn(self.conv(x)))


ARCH = {"resnet18": (BasicBlock, [2, 2, 2, 2]), "resnet34": (BasicBlock, [3, 4, 6, 3]),
        "resnet50": (Bottleneck, [3, 4, 6, 3])}


class KilnNet(ResNetTrunk):
    """The study's network with kiln's initializer names (docs/models.md)."""

    def __init__(self, a):
        block, layers = ARCH[a.backbone]
        super().__init__(block, layers, a.width)
        c = self.feat_channels
        if a.cnet_hidden:
            self.cnet = nn.ModuleDict({"fc1": nn.Linear(c, a.cnet_hidden),
                                       "fc2": nn.Linear(a.cnet_hidden, a.classes)})
        else:
            self.fc = nn.Linear(c, a.classes)
        self.hidden = a.cnet_hidden
        self.spn = None
        if not a.no_spn:
            feat = a.image_size // 32
            if a.spn_scales:
                scales = [int(s) for s in a.spn_scales.split(",")]
            else:
                scales = [2] * int(round(np.log2(a.image_size // feat)))
            assert np.prod(scales) * feat == a.image_size
            ch = c // 2
            if a.spn_width_cap:
                ch = min(ch, a.spn_width_cap)
            self.spn = nn.ModuleDict()
            cin = c
            for i, s in enumerate(scales):
                cout = max(ch, 1)
                self.spn[str(i)] = SPNBlock(cin, cout, s, a.upsample, a.align_corners)
                cin, ch = cout, ch // 2
            self.spn["head"] = nn.Conv2d(cin, 1, 1)
            self.n_blocks = len(scales)

    def forward(self, x):
        f = self.trunk(x)
        h = torch.flatten(F.adaptive_avg_pool2d(f, 1), 1)
        if self.hidden:
            logits = self.cnet["fc2"](F.relu(self.cnet["fc1"](h)))
        else:
            logits = self.fc(h)
        if self.spn is None:
            return logits, None
        s = f
        for i in range(self.n_blocks):
            s = self.spn[str(i)](s)
        return logits, self.spn["head"](s)


def parse_kiln_args(args):
    p = argparse.ArgumentParser()
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--classes", type=int)
    p.add_argument("--cnet-hidden", type=int, default=1024)
    p.add_argument("--no-spn", action="store_true")
    p.add_argument("--spn-scales")
    p.add_argument("--spn-width-cap", type=int, default=0)
    p.add_argument("--upsample", default="nearest")
    p.add_argument("--align-corners", action="store_true")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch", default="1")
    p.add_argument("--seed", default="0")
    return p.parse_args(args.split())


def kiln_model(kiln, args, path):
    cmd = [kiln, "model", "-q", "-o", path] + args.split()
    subprocess.run(cmd, check=True)
    return check_onnx(path)


def check_onnx(path):
    """onnx.checker plus strict shape inference; returns the loaded model."""
    m = onnx.load(path)
    onnx.checker.check_model(m, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(m, check_type=True, strict_mode=True)
    for o in inferred.graph.output:
        assert o.type.tensor_type.shape.dim, f"{path}: no inferred shape for {o.name}"
    return m


def save_pb(arr, name, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(numpy_helper.from_array(np.ascontiguousarray(arr), name).SerializeToString())


def load_kiln_weights(net, model):
    sd = net.state_dict()
    seen = set()
    for init in model.graph.initializer:
        if init.name.endswith(".scales"):
            continue
        assert init.name in sd, f"kiln initializer {init.name} has no PyTorch counterpart"
        w = torch.from_numpy(numpy_helper.to_array(init).copy())
        assert tuple(w.shape) == tuple(sd[init.name].shape), init.name
        sd[init.name].copy_(w)
        seen.add(init.name)
    missing = [k for k in sd if k not in seen and not k.endswith("num_batches_tracked")]
    assert not missing, f"PyTorch tensors kiln did not provide: {missing}"
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            w, b, mu, var = (torch.from_numpy(t) for t in bn_formula(m.num_features))
            m.weight.data.copy_(w)
            m.bias.data.copy_(b)
            m.running_mean.copy_(mu)
            m.running_var.copy_(var)


def make_resnet_narrow(out_dir):
    torch.manual_seed(0)
    net = ResNetTrunk(BasicBlock, [2, 2, 2, 2], width=8, num_classes=10)
    for m in net.modules():  # non-trivial BatchNorm so that a wrong BN shows
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    net.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        y = net(x)
    path = os.path.join(out_dir, "model.onnx")
    os.makedirs(out_dir, exist_ok=True)
    torch.onnx.export(net, x, path, input_names=["input"], output_names=["output"],
                      opset_version=13, do_constant_folding=False,
                      training=torch.onnx.TrainingMode.PRESERVE)
    m = check_onnx(path)
    names = [i.name for i in m.graph.initializer]
    assert "layer1.0.bn1.running_mean" in names and "conv1.weight" in names, names[:8]
    save_pb(x.numpy(), "input", os.path.join(out_dir, "test_data_set_0", "input_0.pb"))
    save_pb(y.numpy(), "output", os.path.join(out_dir, "test_data_set_0", "output_0.pb"))
    print(f"resnet_narrow: {len(names)} initializers, "
          f"{sum(p.numel() for p in net.parameters())} parameters, logits {y[0, :3].tolist()}")


def make_model_fixtures(kiln, out_dir, tmp):
    torch.manual_seed(1)
    x = torch.randn(2, 3, 64, 64)
    save_pb(x.numpy(), "image", os.path.join(out_dir, "input.pb"))
    for name, args in VARIANTS.items():
        full = f"{args} {COMMON}"
        path = os.path.join(tmp, name + ".onnx")
        model = kiln_model(kiln, full, path)
        net = KilnNet(parse_kiln_args(full))
        load_kiln_weights(net, model)
        net.eval()
        with torch.no_grad():
            logits, sal = net(x)
        save_pb(logits.numpy(), "logits", os.path.join(out_dir, name, "logits.pb"))
        if sal is not None:
            save_pb(sal.numpy(), "saliency", os.path.join(out_dir, name, "saliency.pb"))
        print(f"models/{name}: logits {logits[0].tolist()}, saliency range "
              f"{'-' if sal is None else (float(sal.min()), float(sal.max()))}")


def check_full_size(kiln, tmp):
    want = {"resnet18": 11689512, "resnet34": 21797672, "resnet50": 25557032}
    for bb, count in want.items():
        path = os.path.join(tmp, bb + ".onnx")
        m = kiln_model(kiln, f"--backbone {bb} --classes 1000 --no-spn --cnet-hidden 0", path)
        ref = getattr(torchvision.models, bb)()
        params = {n: tuple(p.shape) for n, p in ref.named_parameters()}
        buffers = {n: tuple(b.shape) for n, b in ref.named_buffers()
                   if not n.endswith("num_batches_tracked")}
        got = {i.name: tuple(i.dims) for i in m.graph.initializer}
        assert got == {**params, **buffers}, f"{bb}: names or shapes differ from torchvision"
        n = sum(int(np.prod(got[k])) for k in params)
        assert n == count == sum(p.numel() for p in ref.parameters()), (bb, n, count)
        print(f"{bb}: {n} parameters, names and shapes equal torchvision's")
    for args in ["--backbone resnet18 --classes 8",
                 "--backbone resnet34 --classes 8 --upsample bilinear --batch N",
                 "--backbone resnet50 --classes 8 --spn-scales 2,2,2,4 --spn-width-cap 256",
                 "--backbone resnet50 --classes 2 --upsample bilinear --align-corners"]:
        kiln_model(kiln, args, os.path.join(tmp, "full.onnx"))
        print(f"checker + shape inference ok: kiln model {args}")


def check_init_from(kiln, tmp):
    torch.manual_seed(3)
    ref = torchvision.models.resnet18()
    # Distinct BatchNorm values, as trained weights have: the exporter merges initializers
    # with equal contents (a fresh model's BN weights are all 1), and merged ones keep
    # only one of their names.
    for m in ref.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    ref.eval()
    x = torch.randn(1, 3, 224, 224)
    src = os.path.join(tmp, "tv18.onnx")
    torch.onnx.export(ref, x, src, opset_version=13, do_constant_folding=False,
                      training=torch.onnx.TrainingMode.PRESERVE)
    out = subprocess.run([kiln, "model", "--classes", "1000", "--no-spn", "--cnet-hidden", "0",
                          "--init-from", src, "-o", os.path.join(tmp, "init.onnx")],
                         check=True, capture_output=True, text=True).stdout
    print(out.splitlines()[0])
    assert re.search(r"^init-from .*: 102 tensors matched .* 0 of 100 F-Net", out, re.M), out
    m = onnx.load(os.path.join(tmp, "init.onnx"))
    sd = ref.state_dict()
    for i in m.graph.initializer:
        assert np.array_equal(numpy_helper.to_array(i), sd[i.name].numpy()), i.name
    # An eval-mode export folds BatchNorm into Conv and renames the weights.
    torch.onnx.export(ref, x, src, opset_version=13)
    out = subprocess.run([kiln, "model", "--classes", "8", "--init-from", src, "-o",
                          os.path.join(tmp, "init.onnx")],
                         check=True, capture_output=True, text=True).stdout
    print(out.splitlines()[0])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kiln", default=os.path.join(ROOT, "build", "kiln"))
    ap.add_argument("--data", default=os.path.join(ROOT, "tests", "data"))
    ap.add_argument("--skip-full", action="store_true", help="skip the full-size checks")
    a = ap.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    with tempfile.TemporaryDirectory() as tmp:
        make_resnet_narrow(os.path.join(a.data, "resnet_narrow"))
        make_model_fixtures(a.kiln, os.path.join(a.data, "models"), tmp)
        if not a.skip_full:
            check_full_size(a.kiln, tmp)
            check_init_from(a.kiln, tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
