#!/usr/bin/python3
"""compare_torch.py — PyTorch's side of bench/compare.sh: times the PyTorch module that is
equivalent to an ONNX model, in eval mode under no_grad.

PyTorch cannot run ONNX, so the module is rebuilt: for a model written by `kiln model` the
architecture (backbone, width, C-Net, SPN blocks, scales, upsampling mode) is read from the
ONNX graph's initializer names and Resize nodes, the network is scripts/make_fixtures.py's
KilnNet (the PyTorch twin of `kiln model`, checked against kiln by tests/data/models), and
kiln's weights are copied in by name.  --torch-model picks a torchvision network instead
(random weights; the time does not depend on them).

usage: /usr/bin/python3 bench/compare_torch.py MODEL.onnx [--batch B] [--threads T]
           [--iters N] [--warmup W] [--torch-model auto|resnet18spn|resnet18|resnet50]
           [--check OUT.npz] [--probe]
Prints one JSON line: {"runtime": "torch", "median_ms": ..., "min_ms": ..., "model": ...}.
The allocator knobs (MALLOC_*_ environment variables) are set by the caller.
"""
import argparse
import json
import os
import re
import statistics
import sys
import time

import numpy as np
import onnx
import torch
from onnx import numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from make_fixtures import KilnNet, parse_kiln_args  # noqa: E402


def kiln_args_from_graph(m):
    """The `kiln model` arguments that rebuild this graph, or None if it is not kiln's."""
    inits = {i.name: i for i in m.graph.initializer}
    if "conv1.weight" not in inits:
        return None
    width = inits["conv1.weight"].dims[0]
    counts = [len({k.split(".")[1] for k in inits if k.startswith(f"layer{s}.")})
              for s in (1, 2, 3, 4)]
    bottleneck = "layer1.0.conv3.weight" in inits
    backbone = {(False, (2, 2, 2, 2)): "resnet18", (False, (3, 4, 6, 3)): "resnet34",
                (True, (3, 4, 6, 3)): "resnet50"}.get((bottleneck, tuple(counts)))
    if backbone is None:
        return None
    if "cnet.fc1.weight" in inits:
        hidden = inits["cnet.fc1.weight"].dims[0]
        classes = inits["cnet.fc2.weight"].dims[0]
    elif "fc.weight" in inits:
        hidden, classes = 0, inits["fc.weight"].dims[0]
    else:
        return None
    size = m.graph.input[0].type.tensor_type.shape.dim[2].dim_value or 224
    args = (f"--backbone {backbone} --width {width} --classes {classes} "
            f"--cnet-hidden {hidden} --image-size {size}")
    blocks = sorted(int(k.split(".")[1]) for k in inits
                    if re.fullmatch(r"spn\.\d+\.conv\.weight", k))
    if not blocks:
        return args + " --no-spn"
    scales = []
    for b in blocks:
        s = inits.get(f"spn.{b}.scales")
        scales.append(int(round(float(numpy_helper.to_array(s)[-1]))) if s is not None else 2)
    first = inits[f"spn.{blocks[0]}.conv.weight"].dims[0]
    feat_ch = inits[f"spn.{blocks[0]}.conv.weight"].dims[1]
    cap = first if first != max(feat_ch // 2, 1) else 0
    resize = [n for n in m.graph.node if n.op_type == "Resize"]
    attrs = {a.name: a for a in resize[0].attribute} if resize else {}
    mode = attrs["mode"].s.decode() if "mode" in attrs else "nearest"
    ctm = attrs["coordinate_transformation_mode"].s.decode() \
        if "coordinate_transformation_mode" in attrs else "half_pixel"
    args += " --spn-scales " + ",".join(map(str, scales))
    if cap:
        args += f" --spn-width-cap {cap}"
    if mode == "linear":
        args += " --upsample bilinear" + (" --align-corners" if ctm == "align_corners" else "")
    return args


class Pair(torch.nn.Module):
    """Wraps a torchvision classifier so every network returns (logits, saliency or None)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x), None


def build(model_path, which):
    import torchvision
    if which in ("resnet18", "resnet50"):
        return Pair(getattr(torchvision.models, which)()), which
    if which == "resnet18spn":
        return KilnNet(parse_kiln_args("--backbone resnet18 --classes 8")), "resnet18spn"
    m = onnx.load(model_path)
    args = kiln_args_from_graph(m)
    if args is None:
        raise SystemExit(f"compare_torch: {model_path} was not written by `kiln model`; "
                         "pass --torch-model resnet18spn|resnet18|resnet50")
    net = KilnNet(parse_kiln_args(args))
    sd = net.state_dict()
    for init in m.graph.initializer:
        if init.name in sd and tuple(sd[init.name].shape) == tuple(init.dims):
            sd[init.name].copy_(torch.from_numpy(numpy_helper.to_array(init).copy()))
    return net, "kiln model " + args


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--torch-model", default="auto",
                    choices=["auto", "resnet18spn", "resnet18", "resnet50"])
    ap.add_argument("--image-size", type=int, default=0, help="default: the ONNX input's")
    ap.add_argument("--check", help="write the outputs for a fixed input (seed 0) to this .npz")
    ap.add_argument("--probe", action="store_true", help="only build the module; print it")
    o = ap.parse_args()
    torch.set_num_threads(o.threads)  # defaults to 1 on these VMs
    torch.manual_seed(0)
    net, desc = build(o.model, o.torch_model)
    net.eval()
    if o.probe:
        print(json.dumps({"runtime": "torch", "model": desc, "torch": torch.__version__}))
        return
    size = o.image_size
    if not size:
        dims = onnx.load(o.model, load_external_data=False).graph.input[0].type.tensor_type
        size = dims.shape.dim[2].dim_value or 224
    x = torch.rand(o.batch, 3, size, size) * 2 - 1
    times, cpu = [], []  # wall, and process CPU time (all threads)
    with torch.no_grad():
        if o.check:
            logits, sal = net(x)
            out = {"image": x.numpy(), "logits": logits.numpy()}
            if sal is not None:
                out["saliency"] = sal.numpy()
            np.savez(o.check, **out)
        for i in range(o.warmup + o.iters):
            t0, c0 = time.perf_counter(), time.process_time()
            net(x)
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            if i >= o.warmup:
                times.append(dt)
                cpu.append(dc)
    knobs = any(k.startswith("MALLOC_") and k.endswith("_") for k in os.environ)
    print(json.dumps({"runtime": "torch" + ("+malloc" if knobs else ""),
                      "median_ms": statistics.median(times) * 1e3, "min_ms": min(times) * 1e3,
                      "cpu_median_ms": statistics.median(cpu) * 1e3,
                      "threads": torch.get_num_threads(), "batch": o.batch, "model": desc,
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
