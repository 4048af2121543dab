"""The shared body of resnet18_quant.py / resnet50_quant.py: the reference's argument set and
call order (float | calib | test, --fast_finetune, --deploy)."""
from __future__ import annotations

import argparse
import logging
import os
import random
import sys
import time

import torch
import torchvision
from torch.utils.data import DataLoader, Subset
from torchvision import transforms

from nndct_lite import distributed, torch_quantizer


def parse_args(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--data_dir", default="/path/to/imagenet/")
    p.add_argument("--model_dir", default="/path/to/trained_model/")
    p.add_argument("--config_file", default=None)
    p.add_argument("--subset_len", default=None, type=int)
    p.add_argument("--batch_size", default=32, type=int)
    p.add_argument("--quant_mode", default="calib", choices=["float", "calib", "test"])
    p.add_argument("--fast_finetune", dest="fast_finetune", action="store_true")
    p.add_argument("--deploy", dest="deploy", action="store_true")
    p.add_argument("--target", default=None)
    p.add_argument("--output_dir", default="quantize_result")
    return p.parse_known_args(argv)[0]


def load_data(data_dir, subset_len, batch_size, train=False):
    tf = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
                             transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    folder = os.path.join(data_dir, "train" if train else "val")
    if not os.path.isdir(folder):
        raise SystemExit(f"error: {folder} does not exist; --data_dir must hold an ImageNet-layout "
                         "folder (val/<class>/<image>)")
    ds = torchvision.datasets.ImageFolder(folder, tf)
    if subset_len:
        idx = random.Random(0).sample(range(len(ds)), min(subset_len, len(ds)))
        ds = Subset(ds, idx)
    sampler = None
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        from torch.utils.data.distributed import DistributedSampler
        sampler = DistributedSampler(ds, shuffle=False)
    return DataLoader(ds, batch_size=batch_size, shuffle=False, sampler=sampler)


def evaluate(model, loader, loss_fn):
    model.eval()
    total, top1, top5, loss = 0, 0, 0, 0.0
    with torch.no_grad():
        for images, labels in loader:
            out = model(images)
            loss += loss_fn(out, labels).item() * len(labels)
            _, pred = out.topk(5, 1)
            top1 += (pred[:, 0] == labels).sum().item()
            top5 += (pred == labels[:, None]).any(1).sum().item()
            total += len(labels)
    if distributed.world() is not None:   # under torchrun: the counts of every rank's share
        t = torch.tensor([top1, top5, loss, total], dtype=torch.float64)
        torch.distributed.all_reduce(t)
        top1, top5, loss, total = t.tolist()
    return top1 / total, top5 / total, loss / total


def forward_loop(model, loader):
    model.eval()
    with torch.no_grad():
        for images, _ in loader:
            model(images)


def main(arch: str, argv=None) -> int:
    args = parse_args(argv)
    distributed.init_from_env("cpu")   # under torchrun: join the process group (gloo)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.quant_mode != "test" and args.deploy:
        print("Warning: Exporting xmodel needs to be done in quantization test mode, turn off it "
              "in this running!")
        args.deploy = False
    if args.deploy and (args.batch_size != 1 or args.subset_len != 1):
        print("Warning: Exporting xmodel needs batch size to be 1 and only 1 iteration of "
              "inference, change them automatically!")
        args.batch_size, args.subset_len = 1, 1
    if args.fast_finetune and args.quant_mode == "float":
        print("error: --fast_finetune needs --quant_mode calib or test", file=sys.stderr)
        return 2
    print(f"-------- Start {arch} test ")
    model = getattr(torchvision.models, arch)(weights=None)
    ckpt = os.path.join(args.model_dir, f"{arch}.pth")
    if not os.path.isfile(ckpt):
        print(f"error: {ckpt} not found; --model_dir must hold {arch}.pth", file=sys.stderr)
        return 2
    model.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True))
    model.eval()
    dummy = torch.randn([args.batch_size, 3, 224, 224])
    if args.quant_mode == "float":
        quant_model = model
    else:
        quantizer = torch_quantizer(args.quant_mode, model, (dummy,), output_dir=args.output_dir,
                                    quant_config_file=args.config_file, target=args.target)
        quant_model = quantizer.quant_model
    loss_fn = torch.nn.CrossEntropyLoss()
    val_loader = load_data(args.data_dir, args.subset_len, args.batch_size)
    if args.fast_finetune:
        if args.quant_mode == "calib":
            ft_loader = load_data(args.data_dir, 5120 if args.subset_len is None else args.subset_len,
                                  args.batch_size)
            quantizer.fast_finetune(forward_loop, (quant_model, ft_loader))
        else:
            quantizer.load_ft_param()
    t = time.time()
    if args.quant_mode == "calib":
        forward_loop(quant_model, val_loader)
        quantizer.export_quant_config()
    else:
        top1, top5, loss = evaluate(quant_model, val_loader, loss_fn)
        print(f"loss: {loss:g}")
        print(f"top-1 / top-5 accuracy: {top1:g} / {top5:g}")
    print(f"({time.time() - t:.1f} s)")
    if args.quant_mode == "test" and args.deploy:
        quantizer.export_torch_script(output_dir=args.output_dir)
        quantizer.export_onnx_model(output_dir=args.output_dir)
        quantizer.export_xmodel(output_dir=args.output_dir, deploy_check=False)
    print(f"-------- End of {arch} test ")
    return 0
