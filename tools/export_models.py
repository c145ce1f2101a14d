#!/usr/bin/env python3
"""Exports real architectures (random weights) to ONNX for the generality table (issue #23):
torchvision classifiers, segmentation-models-pytorch decoders (U-Net, FPN with GroupNorm,
DeepLabV3+, PSPNet, LinkNet), a few timm nets, each with torch's TorchScript exporter
(opset 17) and, with --dynamo, its dynamo exporter (opset 18) too; and ultralytics YOLO
detectors built from their yaml (`pip install ultralytics`).

Needs torch, torchvision, timm and segmentation-models-pytorch (the trainspeed bench's venv
under ~/.cache/onnx-prune/torch-venv has them after
`pip install segmentation-models-pytorch onnxscript`). Not part of CI.

    python tools/export_models.py OUT_DIR [--dynamo] [--only NAME,...]
"""

import argparse
import os
import sys
import traceback

import torch


def classifiers():
    import torchvision.models as tv

    for name in [
        "resnet18",
        "resnet50",
        "mobilenet_v2",
        "mobilenet_v3_small",
        "mobilenet_v3_large",
        "efficientnet_b0",
        "shufflenet_v2_x1_0",
        "squeezenet1_1",
        "densenet121",
        "mnasnet1_0",
        "regnet_y_400mf",
        "convnext_tiny",
        "googlenet",
        "vgg11_bn",
        "resnext50_32x4d",
    ]:
        kw = {"aux_logits": False, "init_weights": True} if name == "googlenet" else {}
        yield name, lambda n=name, kw=kw: getattr(tv, n)(weights=None, **kw), (1, 3, 224, 224)


def segmenters():
    import segmentation_models_pytorch as smp

    for arch in ["Unet", "FPN", "DeepLabV3Plus", "PSPNet", "Linknet"]:
        for enc in ["resnet18", "mobilenet_v2"]:
            yield (
                f"smp_{arch.lower()}_{enc}",
                lambda a=arch, e=enc: getattr(smp, a)(encoder_name=e, encoder_weights=None, classes=5),
                (1, 3, 128, 128),
            )


def timm_nets():
    import timm

    for name in ["ghostnet_100", "rexnet_100", "hardcorenas_a", "efficientnet_lite0"]:
        yield f"timm_{name}", lambda n=name: timm.create_model(n, pretrained=False), (1, 3, 224, 224)


def yolos():
    """Ultralytics detectors built from their yaml (random weights), the head in export form."""
    from ultralytics.nn.tasks import DetectionModel

    for cfg in ["yolov8n.yaml", "yolo11n.yaml", "yolov5nu.yaml"]:
        def make(c=cfg):
            m = DetectionModel(c, verbose=False)
            m.model[-1].export = True
            m.model[-1].format = "onnx"
            return m

        yield f"yolo_{cfg[:-5]}", make, (1, 3, 320, 320)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--dynamo", action="store_true")
    ap.add_argument("--only", default="")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    only = set(filter(None, a.only.split(",")))
    torch.manual_seed(0)
    failed = 0
    families = [classifiers, segmenters, timm_nets, yolos]
    nets = []
    for f in families:
        try:
            nets.extend(f())
        except ImportError as e:
            print(f"{f.__name__}: skipped ({e})")
    for name, make, shape in nets:
        if only and name not in only:
            continue
        try:
            m = make().eval()
        except Exception as e:  # an architecture the installed version lacks
            print(f"{name}: cannot build ({type(e).__name__}: {e})")
            continue
        x = torch.randn(*shape)
        exporters = [("ts", False, 17)] + ([("dynamo", True, 18)] if a.dynamo else [])
        for tag, dynamo, opset in exporters:
            path = os.path.join(a.out, f"{name}_{tag}.onnx")
            if os.path.exists(path):
                continue
            try:
                with torch.no_grad():
                    torch.onnx.export(
                        m, (x,), path, opset_version=opset, dynamo=dynamo,
                        input_names=["x"], output_names=["y"],
                        **({} if dynamo else {"dynamic_axes": {"x": {0: "n"}, "y": {0: "n"}}}),
                    )
                print(f"{name}_{tag}: exported")
            except Exception as e:
                failed += 1
                print(f"{name}_{tag}: export failed ({type(e).__name__}: {str(e)[:200]})")
                traceback.print_exc(limit=1, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
