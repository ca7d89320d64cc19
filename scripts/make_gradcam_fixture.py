#!/usr/bin/python3
"""make_gradcam_fixture.py — PyTorch's Grad-CAM, gradient saliency and SPN map of a small
kiln model, for tests/test_explain.c (not run by CI).

Run with Debian's python3 (python3-torch, python3-onnx) from the repository root after
building kiln:

    /usr/bin/python3 scripts/make_gradcam_fixture.py --kiln build/kiln

It builds a narrow kiln network (`kiln model`: ResNet-18 of width 2, C-Net 16 -> 8 -> 3,
SPN, 64x64 inputs, batch 2), gives its BatchNorm layers non-trivial tensors
(make_fixtures.bn_formula), saves it as tests/data/gradcam/model.onnx, loads the same
weights by initializer name into the equivalent PyTorch module (make_fixtures.KilnNet),
and computes, on a deterministic input (input_image(), which test_explain.c rebuilds
bit for bit):

  Grad-CAM   A = output of layer4 (the value feeding the C-Net's GlobalAveragePool),
             Y = logit of the target class; alpha_c = mean_{h,w} dY/dA_c;
             cam = ReLU(sum_c alpha_c A_c), upsampled with
             F.interpolate(size=(64,64), mode="bilinear", align_corners=False)
  gradient   max over channels of |dY/d image|
  SPN        sigmoid(saliency)

and writes targets.npy (int64 [2]: image 0's predicted class, a non-predicted class for
image 1), logits.npy [2,3], cam_low.npy [2,2,2], cam.npy, grad.npy, spn.npy [2,64,64].
"""
import argparse
import os
import subprocess
import sys

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from make_fixtures import KilnNet, bn_formula, load_kiln_weights, parse_kiln_args  # noqa: E402

ARGS = ("--backbone resnet18 --width 2 --classes 3 --cnet-hidden 8 --image-size 64 --batch 2 "
        "--seed 11")


def input_image(b, s):
    """Integer arithmetic, one division and one subtraction in double, one rounding to
    float32: test_explain.c computes the same values exactly."""
    x = np.zeros((b, 3, s, s), dtype=np.float32)
    for n in range(b):
        for c in range(3):
            for i in range(s):
                for j in range(s):
                    k = (j * j + 3 * i * i + 7 * i * j + 11 * c + 29 * n) % 101
                    v = k / 50.0 - 1.0
                    if (j - 20 - 10 * n) ** 2 + (i - 30) ** 2 < 150:
                        v += 1.0  # a blob, so that the picture has an object
                    x[n, c, i, j] = np.float32(v)
    return x


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kiln", default=os.path.join(ROOT, "build", "kiln"))
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "data", "gradcam"))
    a = ap.parse_args()
    torch.set_num_threads(1)
    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, "model.onnx")
    subprocess.run([a.kiln, "model", "-q", "-o", path] + ARGS.split(), check=True)
    m = onnx.load(path)
    inits = {i.name: i for i in m.graph.initializer}
    for n in m.graph.node:
        if n.op_type == "BatchNormalization":
            c = numpy_helper.to_array(inits[n.input[1]]).shape[0]
            for name, val in zip(n.input[1:5], bn_formula(c)):
                inits[name].CopyFrom(numpy_helper.from_array(val, name))
    onnx.save(m, path)

    args = parse_kiln_args(ARGS)
    net = KilnNet(args)
    load_kiln_weights(net, m)
    net.eval()
    s = args.image_size
    x = torch.from_numpy(input_image(int(args.batch), s))

    # the feature map: layer4's output, kept with its gradient
    feats = {}

    def hook(_mod, _inp, out):
        if out.requires_grad:
            out.retain_grad()
        feats["A"] = out

    net.layer4.register_forward_hook(hook)
    with torch.no_grad():
        logits0, _ = net(x)
    pred = logits0.argmax(1)
    targets = torch.tensor([int(pred[0]), (int(pred[1]) + 1) % args.classes], dtype=torch.int64)

    xi = x.clone().requires_grad_(True)
    logits, sal = net(xi)
    onehot = F.one_hot(targets, args.classes).to(logits.dtype)
    logits.backward(onehot)
    A = feats["A"]
    alpha = A.grad.mean(dim=(2, 3), keepdim=True)
    cam_low = F.relu((alpha * A).sum(1, keepdim=True))
    cam = F.interpolate(cam_low, size=(s, s), mode="bilinear", align_corners=False)[:, 0]
    grad = xi.grad.abs().amax(1)
    spn = torch.sigmoid(sal)[:, 0]
    for i in range(2):
        assert float(cam_low[i].max()) > 0, f"image {i}: the Grad-CAM is all zero; pick other targets"

    def save(name, t):
        np.save(os.path.join(a.out, name + ".npy"), np.ascontiguousarray(t.detach().numpy()))

    save("targets", targets)
    save("logits", logits)
    save("cam_low", cam_low[:, 0])
    save("cam", cam)
    save("grad", grad)
    save("spn", spn)
    print(f"gradcam fixture: logits {logits.detach().numpy().round(4).tolist()}, predicted "
          f"{pred.tolist()}, targets {targets.tolist()}, cam max {cam.amax((1, 2)).tolist()}, "
          f"feature map {list(A.shape)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
