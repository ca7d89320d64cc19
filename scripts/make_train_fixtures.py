#!/usr/bin/python3
"""make_train_fixtures.py — PyTorch reference for one training step (tests/test_train_parity.c).

Run with Debian's python3 (python3-torch, python3-torchvision, python3-onnx) from the
repository root after building kiln (not run by CI; the fixtures are committed):

    /usr/bin/python3 scripts/make_train_fixtures.py --kiln build/kiln

It builds a narrow ResNet-18 + C-Net + SPN with `kiln model` (MODEL_ARGS), gives its
BatchNorm layers non-trivial weights and running statistics (bn_formula of
make_fixtures.py, so a BN that ignores gamma or the statistics shows), and builds the
same network in PyTorch (make_fixtures.KilnNet) loading every initializer by name.
Then, for each localization loss (bce, l1, l2), from the same weights and inputs, one
training step exactly as kiln's training graph defines it (train/train_graph.h):

    BatchNorm in training mode (batch statistics; running statistics updated with
    momentum 0.1 and the unbiased variance);
    L_cls = cross-entropy of the logits (mean over the batch);
    L_loc = sum over images of mask_present * (per-image mean over pixels of
            BCE-with-logits(s, m) | |sigmoid(s) - m| | (sigmoid(s) - m)^2)
            / max(1, sum(mask_present));
    loss = L_cls + LAMBDA * L_loc;  Adam(lr 1e-3, betas 0.9/0.999, eps 1e-8).

Files in tests/data/train_parity/ (all .npy are float32 unless noted):
  model.onnx          the network (kiln's seeded init, BN per bn_formula), batch 4
  image.npy           [4,3,64,64]
  labels.npy          [4] int64
  mask.npy            [4,1,64,64] in {0,1}
  mask_present.npy    [4]: 1,0,1,0 — two images train only the class loss
  tensors.txt         one line per trained tensor, "name kind numel" with kind param
                      (a parameter) or stat (a BN running statistic), in the order
                      of the concatenations below
  <loss>/losses.npy   [3]: loss, loss_cls, loss_loc
  <loss>/grads.npy    the gradients of every parameter, flattened and concatenated
                      in tensors.txt order (params only)
  <loss>/updated.npy  every parameter and running statistic after the step,
                      concatenated in tensors.txt order (params and stats)

It also prints, per loss, how far a float64 run of the same step lands from the float32
one: the noise floor any float32 implementation lives with.  It decides the size: at
32x32 with batch 4, layer4's BatchNorm normalizes over 4 values per channel and float32
PyTorch's own gradients are up to 7e-4 away from float64's (more than the test's 1e-4);
at 64x64 (2x2 feature map) the floor is about 1e-5.
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F
from onnx import numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from make_fixtures import KilnNet, bn_formula, check_onnx, parse_kiln_args  # noqa: E402

# Keep in step with tests/test_train_parity.c (batch, classes, image size).
MODEL_ARGS = ("--backbone resnet18 --width 4 --image-size 64 --classes 3 --cnet-hidden 8 "
              "--batch 4 --seed 5")
LOSSES = ("bce", "l1", "l2")
LAMBDA = 1.0
LR, BETAS, EPS = 1e-3, (0.9, 0.999), 1e-8
PRESENT = [1.0, 0.0, 1.0, 0.0]


def make_model(kiln, tmp, out_path):
    """kiln's network with non-trivial BatchNorm tensors, saved as out_path."""
    raw = os.path.join(tmp, "raw.onnx")
    subprocess.run([kiln, "model", "-q", "-o", raw] + MODEL_ARGS.split(), check=True)
    m = onnx.load(raw)
    inits = {i.name: i for i in m.graph.initializer}
    for n in m.graph.node:
        if n.op_type != "BatchNormalization":
            continue
        c = numpy_helper.to_array(inits[n.input[1]]).shape[0]
        for name, val in zip(n.input[1:5], bn_formula(c)):
            inits[name].CopyFrom(numpy_helper.from_array(val, name))
    onnx.save(m, out_path)
    return check_onnx(out_path)


def make_inputs(a):
    g = torch.Generator().manual_seed(11)
    b, s, k = a.batch_int, a.image_size, a.classes
    image = torch.randn(b, 3, s, s, generator=g)
    labels = torch.tensor([0, 2, 1, 2], dtype=torch.int64)[:b] % k
    mask = torch.zeros(b, 1, s, s)
    for i in range(b):  # a rectangle per image, different sizes and places
        y0, x0 = 2 + 3 * i, 20 - 4 * i
        mask[i, 0, y0:y0 + 6 + 2 * i, x0:x0 + 9 - i] = 1.0
    present = torch.tensor(PRESENT[:b])
    return image, labels, mask, present


def net_from_onnx(a, model, dtype):
    net = KilnNet(a)
    sd = net.state_dict()
    seen = set()
    for init in model.graph.initializer:
        if init.name.endswith(".scales"):
            continue
        w = torch.from_numpy(numpy_helper.to_array(init).copy())
        assert init.name in sd and tuple(w.shape) == tuple(sd[init.name].shape), init.name
        sd[init.name].copy_(w)
        seen.add(init.name)
    missing = [k for k in sd if k not in seen and not k.endswith("num_batches_tracked")]
    assert not missing, missing
    for m in net.modules():  # kiln's ONNX momentum 0.9 is PyTorch's 0.1
        if isinstance(m, nn.BatchNorm2d):
            assert m.momentum == 0.1 and m.eps == 1e-5
    return net.to(dtype)


def loc_per_pixel(kind, s, m):
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(s, m, reduction="none")
    d = torch.sigmoid(s) - m
    return d.abs() if kind == "l1" else d * d


def train_step(net, kind, image, labels, mask, present):
    """One step; returns (losses, {param: grad}, {name: updated tensor})."""
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=LR, betas=BETAS, eps=EPS)
    opt.zero_grad()
    logits, sal = net(image)
    l_cls = F.cross_entropy(logits, labels)
    per_img = loc_per_pixel(kind, sal, mask).mean(dim=(1, 2, 3))
    l_loc = (per_img * present).sum() / torch.clamp(present.sum(), min=1.0)
    loss = l_cls + LAMBDA * l_loc
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in net.named_parameters()}
    opt.step()
    state = {n: t.detach().clone() for n, t in net.state_dict().items()
             if not n.endswith("num_batches_tracked")}
    return [loss.item(), l_cls.item(), l_loc.item()], grads, state


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kiln", default=os.path.join(ROOT, "build", "kiln"))
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "data", "train_parity"))
    o = ap.parse_args()
    torch.set_num_threads(1)
    a = parse_kiln_args(MODEL_ARGS)
    a.batch_int = int(a.batch)
    os.makedirs(o.out, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        model = make_model(o.kiln, tmp, os.path.join(o.out, "model.onnx"))
    image, labels, mask, present = make_inputs(a)
    for name, t in (("image", image), ("labels", labels), ("mask", mask),
                    ("mask_present", present)):
        np.save(os.path.join(o.out, name + ".npy"), t.numpy())

    ref = net_from_onnx(a, model, torch.float32)
    params = [n for n, _ in ref.named_parameters()]
    stats = [n for n, _ in ref.named_buffers() if not n.endswith("num_batches_tracked")]
    sd = ref.state_dict()
    with open(os.path.join(o.out, "tensors.txt"), "w") as f:
        for n in params:
            f.write(f"{n} param {sd[n].numel()}\n")
        for n in stats:
            f.write(f"{n} stat {sd[n].numel()}\n")

    for kind in LOSSES:
        losses, grads, state = train_step(net_from_onnx(a, model, torch.float32), kind, image,
                                          labels, mask, present)
        d = os.path.join(o.out, kind)
        os.makedirs(d, exist_ok=True)
        np.save(os.path.join(d, "losses.npy"), np.array(losses, np.float32))
        np.save(os.path.join(d, "grads.npy"),
                np.concatenate([grads[n].numpy().ravel() for n in params]).astype(np.float32))
        np.save(os.path.join(d, "updated.npy"),
                np.concatenate([state[n].numpy().ravel() for n in params + stats])
                .astype(np.float32))
        # the float64 noise floor: how far float32 PyTorch is from exact
        l64, g64, s64 = train_step(net_from_onnx(a, model, torch.float64), kind, image.double(),
                                   labels, mask.double(), present.double())
        worst_g = max(params, key=lambda n: rel_err(grads[n], g64[n]))
        worst_s = max(params + stats, key=lambda n: rel_err(state[n], s64[n]))
        print(f"{kind}: loss {losses[0]:.6f} (cls {losses[1]:.6f}, loc {losses[2]:.6f}); "
              f"float32 vs float64: losses {rel_err(losses, l64):.2e}, worst gradient "
              f"{worst_g} {rel_err(grads[worst_g], g64[worst_g]):.2e}, worst updated "
              f"{worst_s} {rel_err(state[worst_s], s64[worst_s]):.2e}")
    total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(o.out) for f in fs)
    print(f"wrote {o.out}: {len(params)} parameters, {len(stats)} running statistics, "
          f"{total / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
