#!/usr/bin/env python3
"""PyTorch CPU training throughput, the anchor for `cargo bench --bench finetune -- --throughput
--torch` (issue #20). Benchmarks only: the tests never import torch.

For each ONNX model given, the same graph is trained in PyTorch: the model is converted with
onnx2torch (so the architecture is exactly the one burn trains: BN-folded convs with bias,
the option-A shortcut subgraph), and, for the CIFAR ResNets, also the textbook PyTorch module
with BatchNorm (what a user would train in PyTorch; it does more work) and without it; for
mobilenet_v2, torchvision's module (with BatchNorm). Each measurement runs in
a child process of its own so that its peak RSS is its own:

    python3 tools/bench_train_torch.py --threads 2 --batch 64 [--device cuda] MODEL.onnx[:HxW] ...

prints one line per measurement:

    TORCH <name> <variant> <images/s> <ms/step> <peak RSS MiB>

Step = forward + cross-entropy + backward + SGD (momentum 0.9, weight decay 5e-4) at the given
batch on random inputs, median of `--steps` timed steps after 2 warm-up steps.
"""
import argparse
import os
import resource
import statistics
import subprocess
import sys
import time


def cifar_resnet(depth, bn=True):
    """He et al.'s CIFAR ResNet (option-A shortcuts), as Idelbayev's pytorch_resnet_cifar10."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    n = (depth - 2) // 6

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=not bn)
            self.b1 = nn.BatchNorm2d(cout) if bn else nn.Identity()
            self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=not bn)
            self.b2 = nn.BatchNorm2d(cout) if bn else nn.Identity()
            self.pad = cout - cin
            self.stride = stride

        def forward(self, x):
            y = F.relu(self.b1(self.c1(x)))
            y = self.b2(self.c2(y))
            s = x
            if self.stride != 1 or self.pad:
                s = x[:, :, :: self.stride, :: self.stride]
                p = self.pad // 2
                s = F.pad(s, (0, 0, 0, 0, p, p))
            return F.relu(y + s)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(3, 16, 3, 1, 1, bias=not bn)
            self.b = nn.BatchNorm2d(16) if bn else nn.Identity()
            layers = []
            cin = 16
            for i, cout in enumerate([16, 32, 64]):
                for j in range(n):
                    layers.append(Block(cin, cout, 2 if (i > 0 and j == 0) else 1))
                    cin = cout
            self.layers = nn.Sequential(*layers)
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            x = F.relu(self.b(self.c(x)))
            x = self.layers(x)
            x = F.adaptive_avg_pool2d(x, 1).flatten(1)
            return self.fc(x)

    return Net()


def child(spec, variant, threads, batch, steps, device="cpu"):
    import torch

    torch.set_num_threads(threads)
    dev = torch.device(device)
    # On a GPU, a step is timed to its end (kernels run asynchronously).
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    path, _, hw = spec.partition(":")
    if variant == "onnx2torch":
        import onnx
        from onnx2torch import convert

        m = onnx.load(path)
        net = convert(m)
        inp = m.graph.input[0].type.tensor_type.shape.dim
        h, w = (int(inp[2].dim_value) or 32, int(inp[3].dim_value) or 32)
        classes = None
    elif variant == "torchvision":
        import torchvision

        name = os.path.splitext(os.path.basename(path))[0]
        net = getattr(torchvision.models, name)()
        h, w = 224, 224
        classes = None
    else:
        depth = int(variant.split("-")[1])
        net = cifar_resnet(depth, bn=variant.startswith("bn"))
        h, w = 32, 32
        classes = 10
    if hw:
        h, w = (int(v) for v in hw.split("x"))
    net = net.to(dev)
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=1e-4, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(batch, 3, h, w, device=dev)
    with torch.no_grad():
        out = net(x)
    classes = classes or out.shape[-1]
    y = torch.randint(0, classes, (batch,), device=dev)
    times = []
    for i in range(steps + 2):
        sync()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        sync()
        times.append(time.perf_counter() - t0)
    # The teacher's forward pass alone (distillation runs it every step).
    net.eval()
    ft = []
    with torch.no_grad():
        for i in range(steps + 2):
            sync()
            t0 = time.perf_counter()
            net(x)
            sync()
            ft.append(time.perf_counter() - t0)
    med = statistics.median(times[2:])
    fmed = statistics.median(ft[2:])
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    name = os.path.splitext(os.path.basename(path))[0]
    print(f"TORCH {name} {variant} {batch / med:.0f} {med * 1000:.0f} {rss:.0f} fwd {batch / fmed:.0f}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="*")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--device", default="cpu", help="cpu, or cuda (the GPU anchor)")
    ap.add_argument("--child", nargs=2)
    a = ap.parse_args()
    if a.child:
        child(a.child[0], a.child[1], a.threads, a.batch, a.steps, a.device)
        return
    import torch

    print(f"# torch {torch.__version__}, {a.threads} threads, batch {a.batch}, device {a.device}",
          flush=True)
    for spec in a.models:
        name = os.path.basename(spec.split(":")[0])
        variants = ["onnx2torch"]
        if name == "mobilenet_v2.onnx":
            variants.append("torchvision")
        for depth in (20, 56):
            if name == f"resnet{depth}.onnx":
                variants += [f"bn-{depth}", f"nobn-{depth}"]
        for v in variants:
            r = subprocess.run(
                [sys.executable, __file__, "--threads", str(a.threads), "--batch",
                 str(a.batch), "--steps", str(a.steps), "--device", a.device, "--child", spec, v],
                capture_output=True, text=True,
            )
            line = next((l for l in r.stdout.splitlines() if l.startswith("TORCH")), None)
            if line:
                print(line, flush=True)
            else:
                err = (r.stderr.strip().splitlines() or ["no output"])[-1]
                print(f"TORCH {name} {v} failed: {err}", flush=True)


if __name__ == "__main__":
    main()
