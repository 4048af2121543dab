"""Quantize a torchvision ResNet-50 on an ImageNet-layout folder (the vai_q_pytorch example flow).

    python example/resnet50_quant.py --data_dir DIR --model_dir DIR --quant_mode calib --subset_len 200
    python example/resnet50_quant.py --data_dir DIR --model_dir DIR --quant_mode test
    python example/resnet50_quant.py --data_dir DIR --model_dir DIR --quant_mode test \\
        --subset_len 1 --batch_size 1 --deploy

DIR/val/<class>/<image> is read with torchvision's ImageFolder; --model_dir holds resnet50.pth
(a torchvision state dict). Nothing is downloaded.
"""
from imagenet_flow import main

if __name__ == "__main__":
    raise SystemExit(main("resnet50"))
