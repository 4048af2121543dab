"""The main job: quantize a real model on real data, end to end, on any machine.

Data: scikit-learn's handwritten digits (1,797 real 8x8 images with real labels, shipped inside
the scikit-learn package; no download). The example trains a small residual CNN on 80 % of them
(40 epochs, about 90 s on 2 idle CPU cores, one INFO line per epoch; cached under example/.cache/,
so later runs skip it), then runs the vai_q_pytorch flow:
float evaluation -> calib -> test -> deploy (TorchScript, ONNX, XModel), and prints float and
quantized accuracy side by side.

    python example/quickstart.py [--output_dir quantize_result] [--fast_finetune] [--retrain]
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from nndct_lite import torch_quantizer

log = logging.getLogger("quickstart")

CACHE = Path(__file__).resolve().parent / ".cache" / "digits_resnet.pt"


class DigitsResNet(nn.Module):
    """A tiny residual CNN for 1x8x8 digits: conv-bn-relu, a residual block, pool, linear."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.conv3 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(16)
        self.conv4 = nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False)
        self.bn4 = nn.BatchNorm2d(32)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(x)))
        x = F.relu(self.bn3(self.conv3(y)) + x)
        x = F.relu(self.bn4(self.conv4(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def load_digits_data():
    """(train_x, train_y, test_x, test_y): a fixed 80/20 split, pixels scaled to [-1, 1]."""
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 8.0 - 1.0).unsqueeze(1)
    y = torch.from_numpy(d.target.astype(np.int64))
    perm = torch.from_numpy(np.random.default_rng(0).permutation(len(y)))
    x, y = x[perm], y[perm]
    n = int(0.8 * len(y))
    return x[:n], y[:n], x[n:], y[n:]


def train(model, x, y, epochs=40):
    """Adam with a cosine schedule; one INFO line per epoch (loss, train top-1, elapsed time)."""
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    model.train()
    log.info("training DigitsResNet on %d digits for %d epochs (first run only, then cached)",
             len(y), epochs)
    t0 = time.time()
    for epoch in range(epochs):
        perm = torch.randperm(len(y))
        loss_sum = correct = 0.0
        for i in range(0, len(y), 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            out = model(x[idx])
            loss = F.cross_entropy(out, y[idx])
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(idx)
            correct += (out.argmax(1) == y[idx]).sum().item()
        sched.step()
        log.info("epoch %2d/%d  loss %.4f  train top-1 %6.2f %%  %5.1f s", epoch + 1, epochs,
                 loss_sum / len(y), 100.0 * correct / len(y), time.time() - t0)
    return model.eval()


def get_model(train_x, train_y, retrain=False) -> nn.Module:
    torch.manual_seed(0)          # the initial weights too: a fresh run trains the same model
    model = DigitsResNet()
    if CACHE.is_file() and not retrain:
        model.load_state_dict(torch.load(CACHE, map_location="cpu", weights_only=True))
        return model.eval()
    t = time.time()
    train(model, train_x, train_y)
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), CACHE)
    log.info("trained DigitsResNet in %.1f s (cached in %s)", time.time() - t, CACHE)
    return model


def accuracy(model, x, y, batch_size=100) -> float:
    correct = 0
    with torch.no_grad():
        for i in range(0, len(y), batch_size):
            correct += (model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum().item()
    return 100.0 * correct / len(y)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output_dir", default="quantize_result")
    p.add_argument("--config_file", default=None)
    p.add_argument("--fast_finetune", action="store_true")
    p.add_argument("--retrain", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)          # the example's own progress lines; the library stays quiet
    torch.set_num_threads(2)
    tx, ty, vx, vy = load_digits_data()
    model = get_model(tx, ty, args.retrain)
    example = (vx[:1],)

    float_acc = accuracy(model, vx, vy)
    # calib: statistics over 500 training images
    q = torch_quantizer("calib", model, example, output_dir=args.output_dir,
                        quant_config_file=args.config_file)
    if args.fast_finetune:
        q.fast_finetune(accuracy, (q.quant_model, tx[:500], ty[:500]))
    accuracy(q.quant_model, tx[:500], ty[:500])
    q.export_quant_config()
    # test: rebuild from quantize_result/ and evaluate
    qt = torch_quantizer("test", model, example, output_dir=args.output_dir,
                         quant_config_file=args.config_file)
    if args.fast_finetune:
        qt.load_ft_param()
    quant_acc = accuracy(qt.quant_model, vx, vy)
    # deploy: one batch-1 forward, then every export
    qt.quant_model(vx[:1])
    outputs = [qt.export_torch_script(output_dir=args.output_dir),
               qt.export_onnx_model(output_dir=args.output_dir),
               qt.export_xmodel(output_dir=args.output_dir)]
    # trust the xmodel without a board: run it in the integer reference simulator
    from nndct_lite.sim import simulate
    sim_logits = np.asarray(simulate(str(outputs[2]), vx.numpy()))
    with torch.no_grad():
        test_logits = qt.quant_model(vx).numpy()
    same = float((sim_logits == test_logits).mean()) * 100
    sim_acc = 100.0 * float((sim_logits.argmax(1) == vy.numpy()).mean())
    print(f"\nDigitsResNet on {len(vy)} held-out scikit-learn digits")
    print(f"  float top-1      {float_acc:6.2f} %")
    print(f"  quantized top-1  {quant_acc:6.2f} %  (DPU int8, power-of-two scales)")
    print(f"  drop             {float_acc - quant_acc:6.2f} pt")
    print(f"  xmodel in the integer simulator: top-1 {sim_acc:6.2f} %, "
          f"{same:.2f} % of logits identical to the test-mode model")
    print(f"  files in {args.output_dir}/: " + ", ".join(
        sorted(p.name for p in Path(args.output_dir).iterdir() if p.is_file())))
    del outputs
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
