#!/usr/bin/python3
"""`kiln grad` against torch.autograd on a narrow ResNet-18 + C-Net + SPN (inference
mode): the gradient of one class logit, and of the sum of the saliency map, with respect
to the input image and to convolution weights of the F-Net and the SPN, within 1e-4 of
the largest magnitude of each PyTorch gradient.

usage: grad_parity.py KILN_BINARY WORKDIR [--backend jit|ref]
Exits 77 (skipped) when torch/onnx are not installed.  Not part of the build or runtime:
a driver for a comparison test.  The PyTorch network is scripts/make_fixtures.py's
KilnNet, loading kiln's weights by initializer name."""
import os
import subprocess
import sys

try:
    import numpy as np
    import onnx
    import torch
    from onnx import numpy_helper
except ImportError as e:  # pragma: no cover
    print("skipped: %s" % e)
    sys.exit(77)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
try:
    from make_fixtures import KilnNet, bn_formula, load_kiln_weights, parse_kiln_args
except ImportError as e:  # torchvision missing
    print("skipped: %s" % e)
    sys.exit(77)

ARGS = "--backbone resnet18 --width 4 --image-size 32 --classes 3 --cnet-hidden 8 --batch 2 --seed 9"
CLASS = 1
# (output, seed, values to differentiate with respect to)
CASES = [
    ("logits", ["--class", str(CLASS)],
     ["image", "conv1.weight", "layer3.0.conv2.weight", "cnet.fc1.weight"]),
    ("saliency", [], ["image", "layer2.1.conv1.weight", "spn.1.conv.weight", "spn.head.weight"]),
]
TOL = 1e-4

kiln, work = sys.argv[1], sys.argv[2]
backend = sys.argv[4] if len(sys.argv) > 4 and sys.argv[3] == "--backend" else "jit"
os.makedirs(work, exist_ok=True)
torch.set_num_threads(1)

# kiln's network, BatchNorm given non-trivial tensors (load_kiln_weights sets the same)
model_path = os.path.join(work, "model.onnx")
subprocess.run([kiln, "model", "-q", "-o", model_path] + ARGS.split(), check=True)
m = onnx.load(model_path)
inits = {i.name: i for i in m.graph.initializer}
for n in m.graph.node:
    if n.op_type == "BatchNormalization":
        c = numpy_helper.to_array(inits[n.input[1]]).shape[0]
        for name, val in zip(n.input[1:5], bn_formula(c)):
            inits[name].CopyFrom(numpy_helper.from_array(val, name))
onnx.save(m, model_path)

a = parse_kiln_args(ARGS)
net = KilnNet(a)
load_kiln_weights(net, m)
net.eval()
torch.manual_seed(4)
x = torch.randn(int(a.batch), 3, a.image_size, a.image_size)
x_path = os.path.join(work, "image.npy")
np.save(x_path, x.numpy())

failed = 0
for output, seed, wrt in CASES:
    net.zero_grad()
    xi = x.clone().requires_grad_(True)
    logits, sal = net(xi)
    y = logits[:, CLASS].sum() if output == "logits" else sal.sum()
    y.backward()
    params = dict(net.named_parameters())
    want = {w: (xi.grad if w == "image" else params[w].grad).numpy() for w in wrt}
    out_dir = os.path.join(work, "%s-%s" % (output, backend))
    subprocess.run([kiln, "grad", model_path, "--output", output, "--wrt", ",".join(wrt),
                    "--input", "image=" + x_path, "--backend", backend, "--out", out_dir,
                    "--format", "npy"] + seed, check=True, stdout=subprocess.DEVNULL)
    for w in wrt:
        got = np.load(os.path.join(out_dir, w + "_grad.npy"))
        ref = want[w]
        if got.shape != ref.shape:
            print("FAIL d %s / d %s: shape %s, torch %s" % (output, w, got.shape, ref.shape))
            failed += 1
            continue
        scale = float(np.abs(ref).max())
        err = float(np.abs(got.astype(np.float64) - ref).max()) / max(scale, 1e-30)
        ok = err <= TOL
        failed += not ok
        print("%s d %s / d %s (%s): relative error %.2e (max |torch| %.3g)"
              % ("ok  " if ok else "FAIL", output, w, backend, err, scale))
n = sum(len(c[2]) for c in CASES)
print("%d passed, %d failed" % (n - failed, failed))
sys.exit(1 if failed else 0)
