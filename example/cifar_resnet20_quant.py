"""Quantize the pretrained CIFAR-10 ResNet-20 (or -32/44/56) from ../shared/data.

    python example/cifar_resnet20_quant.py --quant_mode float
    python example/cifar_resnet20_quant.py --quant_mode calib --subset_len 1000
    python example/cifar_resnet20_quant.py --quant_mode test
    python example/cifar_resnet20_quant.py --quant_mode test --subset_len 1 --batch_size 1 --deploy

Add --fast_finetune to the calib and test runs, --config_file F to every run, --depth 56 for a
deeper model. Under torchrun every process takes its share of the data.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time

import torch

from cifar_models import SHARED_DATA, WEIGHTS, cifar10, cifar_resnet
from nndct_lite import distributed, torch_quantizer


def batches(x, y, batch_size):
    for i in range(0, len(y), batch_size):
        yield x[i:i + batch_size], y[i:i + batch_size]


def evaluate(model, x, y, batch_size):
    correct, loss = 0, 0.0
    with torch.no_grad():
        for xb, yb in batches(x, y, batch_size):
            out = model(xb)
            loss += torch.nn.functional.cross_entropy(out, yb, reduction="sum").item()
            correct += (out.argmax(1) == yb).sum().item()
    n = len(y)
    if distributed.world() is not None:   # under torchrun: the counts of every rank's share
        t = torch.tensor([correct, loss, n], dtype=torch.float64)
        torch.distributed.all_reduce(t)
        correct, loss, n = t.tolist()
    return correct / n, loss / n


def forward_loop(model, x, batch_size):
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            model(x[i:i + batch_size])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="quantize a CIFAR-10 ResNet from ../shared/data")
    p.add_argument("--quant_mode", default="calib", choices=["float", "calib", "test"])
    p.add_argument("--subset_len", type=int, default=None)
    p.add_argument("--batch_size", type=int, default=100)
    p.add_argument("--config_file", default=None)
    p.add_argument("--fast_finetune", action="store_true")
    p.add_argument("--deploy", action="store_true")
    p.add_argument("--depth", type=int, default=20, choices=sorted(WEIGHTS))
    p.add_argument("--output_dir", default="quantize_result")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not (SHARED_DATA / "cifar10" / "test.npz").is_file():
        print(f"{SHARED_DATA} is not available; this example needs the CIFAR-10 arrays and "
              "weights from ../shared/data (see example/quickstart.py for a self-contained run)")
        return 0
    if args.deploy and args.quant_mode != "test":
        print("Warning: --deploy needs --quant_mode test; turning it off")
        args.deploy = False
    if args.deploy:
        args.subset_len, args.batch_size = 1, 1
    distributed.init_from_env("cpu")   # under torchrun: join the process group (gloo)
    if distributed.world() is None:
        torch.set_num_threads(2)
    model = cifar_resnet(args.depth)
    split = "calib" if args.quant_mode == "calib" else "test"
    x, y = cifar10(split, args.subset_len)
    if distributed.world() is not None:   # this process's share: DistributedSampler's indices
        from torch.utils.data.distributed import DistributedSampler
        idx = list(DistributedSampler(range(len(y)), shuffle=False))
        x, y = x[idx], y[idx]
    t = time.time()
    if args.quant_mode == "float":
        acc, loss = evaluate(model, x, y, args.batch_size)
        print(f"float: loss {loss:.4f}  top-1 {100 * acc:.2f} %  ({time.time() - t:.1f} s)")
        return 0
    q = torch_quantizer(args.quant_mode, model, (x[:1],), output_dir=args.output_dir,
                        quant_config_file=args.config_file)
    if args.fast_finetune:
        if args.quant_mode == "calib":
            q.fast_finetune(forward_loop, (q.quant_model, x, args.batch_size))
        else:
            q.load_ft_param()
    if args.quant_mode == "calib":
        forward_loop(q.quant_model, x, args.batch_size)
        q.export_quant_config()
        print(f"calibrated on {len(y)} images in {time.time() - t:.1f} s -> {args.output_dir}/")
        return 0
    acc, loss = evaluate(q.quant_model, x, y, args.batch_size)
    print(f"quantized: loss {loss:.4f}  top-1 {100 * acc:.2f} %  ({time.time() - t:.1f} s)")
    if args.deploy:
        for path in (q.export_torch_script(output_dir=args.output_dir),
                     q.export_onnx_model(output_dir=args.output_dir),
                     q.export_xmodel(output_dir=args.output_dir)):
            print(f"wrote {getattr(path, 'name', path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
