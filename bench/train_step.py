#!/usr/bin/python3
"""train_step.py — PyTorch's side of bench/train_bench.sh: the training step of the
study's network (ResNet-18 + C-Net + SPN, scripts/make_fixtures.py's KilnNet, the
module kiln's `kiln model` mirrors) with the losses kiln's training graph computes
(cross-entropy + BCE-with-logits on the saliency, images without a mask contributing
only the class loss) and Adam, BatchNorm in training mode.

usage: /usr/bin/python3 bench/train_step.py [--batch 8] [--size 224] [--steps 5]
           [--threads 2] [--classes 8] [--cnet-hidden 1024] [--loc-loss bce|l1|l2]
Prints one line: `torch_step size=S batch=B threads=T first_s=... median_s=... images_per_s=...
steps_s=t1,t2,...` (median over the steps after the first; every step's seconds).  Peak RSS is measured outside (/usr/bin/time -v).
"""
import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from make_fixtures import KilnNet, parse_kiln_args  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--classes", type=int, default=8)
    ap.add_argument("--cnet-hidden", type=int, default=1024)
    ap.add_argument("--loc-loss", default="bce", choices=["bce", "l1", "l2"])
    o = ap.parse_args()
    torch.set_num_threads(o.threads)  # defaults to 1 on the reference machine
    torch.manual_seed(0)
    a = parse_kiln_args(f"--classes {o.classes} --cnet-hidden {o.cnet_hidden} "
                        f"--image-size {o.size} --batch {o.batch}")
    net = KilnNet(a).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
    b, s = o.batch, o.size
    image = torch.randn(b, 3, s, s)
    labels = torch.arange(b) % o.classes
    mask = (torch.rand(b, 1, s, s) > 0.7).float()
    present = (torch.arange(b) % 2 == 0).float()  # half the images have no mask
    times = []
    for _ in range(o.steps):
        t0 = time.perf_counter()
        opt.zero_grad()
        logits, sal = net(image)
        l_cls = F.cross_entropy(logits, labels)
        if o.loc_loss == "bce":
            pix = F.binary_cross_entropy_with_logits(sal, mask, reduction="none")
        else:
            d = torch.sigmoid(sal) - mask
            pix = d.abs() if o.loc_loss == "l1" else d * d
        l_loc = (pix.mean(dim=(1, 2, 3)) * present).sum() / torch.clamp(present.sum(), min=1.0)
        (l_cls + l_loc).backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times[1:]) if len(times) > 1 else times[0]
    print(f"torch_step size={s} batch={b} threads={o.threads} first_s={times[0]:.4f} "
          f"median_s={med:.4f} images_per_s={b / med:.2f} "
          f"steps_s={','.join('%.4f' % t for t in times)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
