#!/usr/bin/python3
"""Full-size torchvision ResNet-18 (random weights, seeded), exported to ONNX by
PyTorch, run by `kiln run`; the outputs must match PyTorch's within 1e-4.

usage: resnet18_parity.py KILN_BINARY WORKDIR [--backend jit|ref]
Exits 77 (skipped) when torch/torchvision are not installed.  Not part of the
build or runtime: a driver for a comparison test."""
import os, subprocess, sys

try:
    import numpy as np
    import torch, torchvision
except ImportError as e:  # pragma: no cover
    print("skipped: %s" % e)
    sys.exit(77)

kiln, work = sys.argv[1], sys.argv[2]
backend = sys.argv[4] if len(sys.argv) > 4 and sys.argv[3] == "--backend" else "jit"
os.makedirs(work, exist_ok=True)
torch.manual_seed(0)
model = torchvision.models.resnet18(weights=None).eval()
# non-trivial BN statistics so folding/BN errors cannot hide behind identity BNs
with torch.no_grad():
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-0.2, 0.2)
x = torch.randn(1, 3, 224, 224)
with torch.no_grad():
    want = model(x).numpy()
onnx_path = os.path.join(work, "resnet18.onnx")
torch.onnx.export(model, x, onnx_path, opset_version=13, input_names=["input"],
                  output_names=["logits"])
np.save(os.path.join(work, "input.npy"), x.numpy())
out_dir = os.path.join(work, "out")
subprocess.run([kiln, "run", onnx_path, "--backend", backend, "--input",
                "input=" + os.path.join(work, "input.npy"), "--out", out_dir, "--format", "npy"],
               check=True)
got = np.load(os.path.join(out_dir, "logits.npy"))
err = np.abs(got - want).max()
scale = np.abs(want).max()
print("resnet18 (%s): max |kiln - torch| = %.3g (max |torch| = %.3g)" % (backend, err, scale))
if not err <= 1e-4 * max(1.0, scale):
    print("FAIL: outputs differ by more than 1e-4")
    sys.exit(1)
print("1 passed, 0 failed")
