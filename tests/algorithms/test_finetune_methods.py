"""The ``fast_finetune_method`` key (issue 24): a wrong value is a clear error naming the key,
the method that ran is recorded in resolved_config.json, gptq/adaround are deterministic
(same inputs, same param.pth and quant_info.json bytes), exception-safe, merged across
ranks on the distributed path, load in test mode as before, and a GPTQ- or AdaRound-tuned DPU model still
exports an XModel that real XIR loads and whose simulation equals test mode."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from algo_helpers import PLAIN, W4A8, forward_batches, write_config
from test_gptq import data, net
from nndct_lite import torch_quantizer
from nndct_lite.algorithms.adaround import AdaroundOptions
from nndct_lite.algorithms.fast_finetune import FinetuneOptions, fast_finetune
from nndct_lite.config.spec import FinetuneMethod
from nndct_lite.errors import ConfigError
from shared_paths import XIR

QUICK = FinetuneOptions(adaround=AdaroundOptions(iters=40, batch_size=8))


def _calib(tmp_path, cfg: dict | None, method: str | None = None, name: str = "cfg.json"):
    x = data()
    full = dict(cfg or {})
    if method is not None:
        full["fast_finetune_method"] = method
    q = torch_quantizer("calib", net(), (x[:1],), output_dir=str(tmp_path),
                        quant_config_file=write_config(tmp_path, full, name) if full else None)
    return q, x


def _finetune_and_export(tmp_path, cfg, method=None, opts=QUICK):
    q, x = _calib(tmp_path, cfg, method)
    fast_finetune(q._session, forward_batches, (q.quant_model, x, 16), opts)
    forward_batches(q.quant_model, x, 16)
    q.export_quant_config()
    return q, x


# ------------------------------------------------------------------ the key
def test_bad_method_in_the_config_names_the_key(tmp_path):
    with pytest.raises(ConfigError) as err:
        _calib(tmp_path, PLAIN, "gptqq")
    text = str(err.value)
    assert "fast_finetune_method" in text and "'gptq'" in text and "adaround" in text
    with pytest.raises(ConfigError, match="fast_finetune_method"):
        _calib(tmp_path, {**PLAIN, "fast_finetune_method": 2})


def test_bad_method_keyword_names_the_key(tmp_path):
    q, x = _calib(tmp_path, PLAIN)
    with pytest.raises(ConfigError, match="fast_finetune_method 'sgd'.*'adaquant', 'gptq'"):
        q.fast_finetune(forward_batches, (q.quant_model, x, 16), method="sgd")
    assert not (tmp_path / "param.pth").exists()


def test_method_spellings_and_default(tmp_path):
    q, _ = _calib(tmp_path, PLAIN, "AdaRound")
    assert q._session.config.fast_finetune_method is FinetuneMethod.ADAROUND
    q, _ = _calib(tmp_path / "d", PLAIN)
    assert q._session.config.fast_finetune_method is FinetuneMethod.ADAQUANT


@pytest.mark.parametrize("method,keyword", [("gptq", None), (None, "gptq"), (None, None)])
def test_resolved_config_records_what_ran(tmp_path, method, keyword):
    q, x = _calib(tmp_path, PLAIN, method)
    data0 = json.loads((tmp_path / "resolved_config.json").read_text())
    assert data0["switches"]["fast_finetune_method"]["value"] == (method or "adaquant")
    q.fast_finetune(forward_batches, (q.quant_model, x, 16), method=keyword)
    data1 = json.loads((tmp_path / "resolved_config.json").read_text())
    ran = method or keyword or "adaquant"
    source = {"gptq": "config file"}.get(method) or ("fast_finetune(method=...)" if keyword
                                                     else "default")
    assert data1["fast_finetune"]["method"] == ran
    assert data1["fast_finetune"]["source"] == source
    assert data1["fast_finetune"]["layers"] == 4
    assert data1["switches"]["fast_finetune_method"]["ran"] == ran


# ------------------------------------------------------------------ determinism
@pytest.mark.parametrize("method", ["gptq", "adaround"])
@pytest.mark.parametrize("cfg", [None, W4A8], ids=["dpu", "w4a8"])
def test_same_inputs_same_param_bytes(tmp_path, method, cfg):
    """Two runs on the same inputs write the same param.pth and quant_info.json, byte for byte."""
    full = {**(cfg or {}), **PLAIN}
    blobs = []
    for run in ("a", "b"):
        _finetune_and_export(tmp_path / run, full, method)
        blobs.append({f: (tmp_path / run / f).read_bytes()
                      for f in ("param.pth", "quant_info.json")})
    assert blobs[0] == blobs[1]


# ------------------------------------------------------------------ test mode, safety, dist
@pytest.mark.parametrize("method", ["gptq", "adaround"])
def test_test_mode_loads_the_tuned_weights(tmp_path, method):
    q, x = _finetune_and_export(tmp_path, {**W4A8, **PLAIN}, method)
    tuned = {k: v.clone() for k, v in q.quant_model.state_dict().items()}
    qt = torch_quantizer("test", net(), (x[:1],), output_dir=str(tmp_path),
                         quant_config_file=str(tmp_path / "cfg.json"))
    qt.load_ft_param()
    for k, v in qt.quant_model.state_dict().items():
        if k in tuned and v.is_floating_point():
            assert torch.equal(v, tuned[k]), k
    with torch.no_grad():
        out = qt.quant_model(x)
    assert torch.isfinite(out).all()


def test_interrupted_gptq_leaves_the_calibration_intact(tmp_path, monkeypatch):
    from nndct_lite.algorithms import gptq
    q, x = _calib(tmp_path, PLAIN, "gptq")
    before = {k: v.clone() for k, v in q.quant_model.state_dict().items()}
    real, calls = gptq.GptqTuner.__call__, {"n": 0}

    def fail_second(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(self, *a, **kw)
    monkeypatch.setattr(gptq.GptqTuner, "__call__", fail_second)
    with pytest.raises(KeyboardInterrupt):
        q.fast_finetune(forward_batches, (q.quant_model, x, 16))
    for k, v in q.quant_model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not (tmp_path / "param.pth").exists() and q._session.fast_finetuned is False
    forward_batches(q.quant_model, x, 16)           # calibration goes on, and exports
    assert q.export_quant_config().is_file()


@pytest.mark.parametrize("method", ["gptq", "adaround"])
def test_emulated_world_is_the_plain_run(tmp_path, method):
    # emulate(2) holds every rank's data in this process: the merged statistics (gptq) and
    # averaged steps (adaround) are the plain run's, byte for byte (2 gloo ranks:
    # tests/distributed/test_distributed.py)
    from nndct_lite import distributed
    for d in ("plain", "emulated"):
        (tmp_path / d).mkdir()
    q, x = _calib(tmp_path / "plain", PLAIN, method)
    fast_finetune(q._session, forward_batches, (q.quant_model, x, 16), QUICK)
    with distributed.emulate(2):
        qe, xe = _calib(tmp_path / "emulated", PLAIN, method)
        assert qe._session.dist is not None
        fast_finetune(qe._session, forward_batches, (qe.quant_model, xe, 16), QUICK)
    assert (tmp_path / "plain" / "param.pth").read_bytes() == \
        (tmp_path / "emulated" / "param.pth").read_bytes()


def test_unstackable_batches_are_a_clear_error(tmp_path):
    from nndct_lite.errors import CalibrationError
    q, x = _calib(tmp_path, PLAIN, "gptq")
    small = torch.randn(4, 3, 6, 6)

    def run(model):
        with torch.no_grad():
            model(x[:8])
            model(small)
    with pytest.raises(CalibrationError, match="adaquant"):
        q.fast_finetune(run, (q.quant_model,))


# ------------------------------------------------------------------ the XModel still exports
def _xir_loads(path) -> None:
    if not (XIR / "check_xmodel.py").is_file():
        return
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = f"{XIR / 'lib'}:{env.get('LD_LIBRARY_PATH', '')}"
    env["PYTHONPATH"] = f"{XIR / 'python'}:{env.get('PYTHONPATH', '')}"
    r = subprocess.run([sys.executable, str(XIR / "check_xmodel.py"), "--brief", str(path)],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]


@pytest.mark.parametrize("method", ["gptq", "adaround"])
def test_tuned_dpu_model_exports_and_simulates_as_test_mode(tmp_path, method):
    from nndct_lite.sim import Simulator
    _, x = _finetune_and_export(tmp_path, None, method)      # the DPU default, no file
    qt = torch_quantizer("test", net(), (x[:1],), output_dir=str(tmp_path))
    qt.load_ft_param()
    with torch.no_grad():
        ref = qt.quant_model(x[:1]).numpy()
    path = qt.export_xmodel(output_dir=str(tmp_path))
    _xir_loads(path)
    sim = Simulator(str(path))
    out = sim.run(x[:1].numpy(), output_layout="NCHW")[sim.outputs[0]]
    fp = sim.output_fix(sim.outputs[0])[1]
    assert out.shape == ref.shape
    assert np.abs(out - ref).max() <= 2.0 ** -fp + 1e-7
