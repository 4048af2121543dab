"""Nothing in a result folder is executed, and model names cannot escape it (issue: trust)."""
from __future__ import annotations

import importlib.util
import os
import py_compile
import sys

import pytest
import torch

from tiny_nets import Net

from nndct_lite import torch_quantizer




X = torch.randn(2, 3, 8, 8)
PLANTED = "planted code ran"


def _plant(folder, name, flag, invalidation):
    """A .pyc in __pycache__ for <name>.py whose code raises, valid for the loader: with the
    generated source being deterministic, its hash (checked pycs) or mtime/size are known."""
    src = folder / f"{name}.py"
    evil = folder / "evil_src.py"
    evil.write_text(f"open({str(flag)!r}, 'w').write('x')\nraise RuntimeError({PLANTED!r})\n")
    cache = importlib.util.cache_from_source(str(src))
    os.makedirs(os.path.dirname(cache), exist_ok=True)
    if invalidation is py_compile.PycInvalidationMode.TIMESTAMP:
        # same mtime and size as the real source: pad the evil source to the same length
        body = evil.read_text()
        body += "#" * max(0, src.stat().st_size - len(body.encode()))
        evil.write_text(body[: src.stat().st_size] if len(body.encode()) > src.stat().st_size
                        else body)
        st = src.stat()
        os.utime(evil, ns=(st.st_atime_ns, st.st_mtime_ns))
    py_compile.compile(str(evil), cfile=cache, invalidation_mode=invalidation, doraise=True)
    if invalidation is not py_compile.PycInvalidationMode.TIMESTAMP:
        # a checked/unchecked hash pyc claims to be for the generated source: rewrite its hash
        import hashlib  # noqa: F401  (importlib computes the source hash itself)
        data = bytearray(open(cache, "rb").read())
        data[8:16] = importlib.util.source_hash(src.read_bytes())
        open(cache, "wb").write(bytes(data))
    evil.unlink()


@pytest.mark.parametrize("invalidation", list(py_compile.PycInvalidationMode))
@pytest.mark.parametrize("mode", ["calib", "test"])
def test_planted_pyc_never_runs(tmp_path, invalidation, mode):
    model = Net().eval()
    q = torch_quantizer("calib", model, (X,), output_dir=str(tmp_path))
    q.quant_model(X)
    q.export_quant_config()
    flag = tmp_path / "flag"
    _plant(tmp_path, "Net", flag, invalidation)
    q = torch_quantizer(mode, model, (X,), output_dir=str(tmp_path))
    q.quant_model(X)
    assert not flag.exists()


def test_edited_generated_file_never_runs(tmp_path):
    model = Net().eval()
    q = torch_quantizer("calib", model, (X,), output_dir=str(tmp_path))
    q.quant_model(X)
    q.export_quant_config()
    (tmp_path / "Net.py").write_text(f"raise RuntimeError({PLANTED!r})\n")
    q = torch_quantizer("test", model, (X,), output_dir=str(tmp_path))
    q.quant_model(X)
    assert "raise RuntimeError" not in (tmp_path / "Net.py").read_text()   # rewritten


@pytest.mark.parametrize("cls_name, expected", [("../../x", "M______x"), ("My-Net", "My_Net"),
                                                ("class", "_class"), ("3D", "_3D")])
def test_model_names_stay_inside_and_generate_valid_code(tmp_path, cls_name, expected):
    Odd = type(cls_name, (Net,), {})
    out = tmp_path / "out"
    model = Odd().eval()
    q = torch_quantizer("calib", model, (X,), output_dir=str(out))
    q.quant_model(X)
    q.export_quant_config()
    q = torch_quantizer("test", model, (X,), output_dir=str(out))
    q.quant_model(X)
    xm = q.export_xmodel(output_dir=str(out))
    assert (out / f"{expected}.py").is_file() and xm.parent == out
    assert xm.name == f"{expected}_int.xmodel"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert sys.modules  # the generated module compiled; nothing outside tmp_path was written


def test_test_mode_export_quant_config_keeps_the_calibration_record(tmp_path):
    model = Net().eval()
    q = torch_quantizer("calib", model, (X,), output_dir=str(tmp_path))
    q.quant_model(X)
    q.export_quant_config()
    before = (tmp_path / "quant_info.json").read_bytes()
    cfg = tmp_path / "nobc.json"
    cfg.write_text('{"include_bias_corr": false}')
    q = torch_quantizer("test", model, (X,), output_dir=str(tmp_path), quant_config_file=str(cfg))
    q.quant_model(X)
    assert q.export_quant_config() == tmp_path / "quant_info.json"
    assert (tmp_path / "quant_info.json").read_bytes() == before
    q = torch_quantizer("test", model, (X,), output_dir=str(tmp_path))
    assert q._session.config.include_bias_corr and "bias_corr_sha256" in before.decode()


def _cfg(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


CPU = ('{"target_device": "CPU", "include_cle": false, "include_bias_corr": false, '
       '"overall_quantize_config": {"method": "maxmin", "scale_type": "float", '
       '"calib_statistic_method": "max"}}')
CPU_PER_CHANNEL = CPU[:-2] + '}, "tensor_quantize_config": {"weights": {"per_channel": true}}}'


CPU_MSE = CPU.replace('"maxmin"', '"mse"')


@pytest.mark.parametrize("calib_cfg, test_cfg, field", [
    (CPU, None, "target_device CPU in quant_info.json, DPU in the config"),
    (None, CPU, "target_device DPU in quant_info.json, CPU in the config"),
    (CPU, CPU_PER_CHANNEL, "weights: per_channel False -> True"),
    (CPU, CPU_MSE, "input: method 'maxmin' -> 'mse'"),
])
def test_test_mode_refuses_a_calibration_made_with_another_config(tmp_path, calib_cfg, test_cfg,
                                                                  field):
    """calib for CPU then test with the DPU default ran silently and exported an XModel with no
    fix op; DPU -> CPU and per-tensor -> per-channel passed silently too."""
    from nndct_lite import QuantInfoError
    model = Net().eval()
    q = torch_quantizer("calib", model, (X,), output_dir=str(tmp_path / "r"),
                        quant_config_file=calib_cfg and _cfg(tmp_path, "c.json", calib_cfg))
    q.quant_model(X)
    q.export_quant_config()
    with pytest.raises(QuantInfoError) as err:
        torch_quantizer("test", model, (X,), output_dir=str(tmp_path / "r"),
                        quant_config_file=test_cfg and _cfg(tmp_path, "t.json", test_cfg))
    assert field in str(err.value) and "quant_config_file" in err.value.hint


def test_xmodel_refuses_a_result_without_fix_positions(tmp_path):
    """The last line of defence: a frozen result with float scales never becomes an XModel."""
    from nndct_lite import ExportError
    model = Net().eval()
    q = torch_quantizer("calib", model, (X,), output_dir=str(tmp_path))
    q.quant_model(X)
    q.export_quant_config()
    q = torch_quantizer("test", model, (X,), output_dir=str(tmp_path))
    q.quant_model(X)
    from nndct_lite.numerics.params import QuantParams
    for fq in quantizers_of(q):
        if fq.params is not None:
            fq.params = QuantParams(fq.params.bit_width, scale=0.5, zero_point=0, float_max=63.5)
    with pytest.raises(ExportError) as err:
        q.export_xmodel(output_dir=str(tmp_path))
    assert "power-of-two" in str(err.value) and "DPU" in err.value.hint
    assert not list(tmp_path.glob("*.xmodel"))


def quantizers_of(q):
    from nndct_lite.quant.build import quantizers
    return quantizers(q.quant_model).values()
