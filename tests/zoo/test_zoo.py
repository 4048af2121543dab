"""Issue 21: the zoo suite. Every architecture of zoo_models.MODELS (timm and torchvision:
classification, segmentation, a detection backbone with FPN) through every stage:
trace -> calib -> test (a batch and batch 1) -> export_xmodel (the real XIR library loads it)
-> the integer simulator agrees with test mode; export_onnx_model -> onnxruntime agrees;
export_torch_script -> torch.jit.load agrees ("agrees": zoo_models.compare).

One test per (model, stage). A module-scoped fixture per model runs the stages on demand and
caches them, so no stage recalibrates. The default run takes the models of zoo_models.CORE;
``--zoo=all`` (or ``NNDCT_LITE_ZOO=all``) takes all of them (marker ``zoo_full`` on the rest). Stages that fail today because of library gaps
are strict xfails from zoo_models.KNOWN_FAILURES, matched on the exact error line: a fix makes
them XPASS (and fail) until the table is updated; a different error fails.

The benchmark bench/bench_zoo.py runs the same table and stages and writes docs/models.md.
"""
from __future__ import annotations


import pytest
import torch

import zoo_models as zm


class KnownFailure(Exception):
    """Raised when a stage fails with exactly the error the table expects (the only exception
    a zoo xfail accepts)."""


def _cases():
    for spec in zm.MODELS:
        for stage in zm.STAGES:
            marks = [] if spec.id in zm.CORE else [pytest.mark.zoo_full]
            reason = zm.known_failure(spec.id, stage)
            if reason is not None:
                marks.append(pytest.mark.xfail(strict=True, reason=reason, raises=KnownFailure))
            yield pytest.param(spec.id, stage, marks=marks, id=f"{spec.id}-{stage}")


@pytest.fixture(scope="module")
def zoo_run(request, tmp_path_factory):
    spec = zm.BY_ID[request.param]
    if spec.source == "timm":
        pytest.importorskip("timm")
    threads = torch.get_num_threads()
    # one thread: on a loaded machine two OpenMP threads spin-wait on every small op
    torch.set_num_threads(1)
    run = zm.ZooRun(spec, tmp_path_factory.mktemp(spec.id))
    try:
        yield run
    finally:
        run.cleanup()
        torch.set_num_threads(threads)


@pytest.mark.parametrize("zoo_run, stage", list(_cases()), indirect=["zoo_run"])
def test_zoo(zoo_run, stage):
    expected = zm.known_failure(zoo_run.spec.id, stage)
    torch.set_num_threads(1)
    try:
        zoo_run.stage(stage)
    except zm.StageSkipped as e:
        pytest.skip(str(e))
    except zm.StageFailed as e:
        if expected is not None and e.message == expected:
            raise KnownFailure(e.message) from e.cause
        note = "" if expected is None else f" (the table expects: {expected})"
        raise AssertionError(f"{zoo_run.spec.id} {stage}: {e.message}{note}") from e.cause


def test_table():
    """The table is what issue 21 asks for, and every known failure names a real model and
    stage (a stale entry would otherwise silently expect nothing)."""
    assert len(zm.MODELS) >= 40
    assert len(zm.BY_ID) == len(zm.MODELS), "duplicate model ids"
    assert {m.source for m in zm.MODELS} == {"timm", "tv"}
    for (model_id, stage), reason in zm.KNOWN_FAILURES.items():
        assert model_id in zm.BY_ID, model_id
        assert stage in zm.STAGES, stage
        assert reason and "\n" not in reason
        dep = zm.DEPENDS[stage]
        while dep is not None:   # a dependent stage inherits its reason: one entry per chain
            assert (model_id, dep) not in zm.KNOWN_FAILURES, (model_id, stage, dep)
            dep = zm.DEPENDS[dep]
    assert set(zm.CORE) <= set(zm.BY_ID), set(zm.CORE) - set(zm.BY_ID)
    assert 10 <= len(set(zm.CORE)) == len(zm.CORE) < len(zm.MODELS)


def test_compare_can_fail():
    """The agreement check rejects a value two steps away and a changed argmax."""
    import numpy as np
    ref = [np.array([[0.0, 1.0, 0.5], [0.25, 0.0, 0.0]])]
    zm.compare("same", ref, [ref[0].copy()], [0.25], exact=True)
    one = ref[0].copy()
    one[0, 2] += 0.25
    zm.compare("one step", ref, [one], [0.25], exact=True)
    two = ref[0].copy()
    two[0, 2] += 0.5
    with pytest.raises(zm.ZooCheckError, match="steps"):
        zm.compare("two steps", ref, [two], [0.25], exact=True)
    flip = ref[0].copy()
    flip[1, 0] -= 0.25   # one step each, but row 1's top-1 moves from class 0 to class 1
    flip[1, 1] += 0.25
    with pytest.raises(zm.ZooCheckError, match="argmax"):
        zm.compare("argmax", ref, [flip], [0.25], exact=True)
