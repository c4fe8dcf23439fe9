"""The torch ONNX backend (musepose/pose/onnx_torch.py) against onnxruntime, and its errors.

1. Architecture-shaped random-weight networks (benchmarks/dwpose_graphs.py: YOLOX-L-like and
   RTMPose-l-like, narrow and shallow so they run in about a second, but with every layer type, the
   real input sizes, names and opset 11 of the real exports): raw outputs within 1e-4 (fp32) of
   onnxruntime's. Their operator sets are the ones docs/POSE.md lists for the real files.
2. Operator forms those exports do not produce here but other exporter versions write (attribute vs
   input forms across opsets, unfused BatchNorm, Gemm, ...): one small onnx.helper graph each, within 1e-5.
3. fp16 (what a GPU runs) on the CPU: finite and within a few percent of fp32.
4. A file that cannot run is an OnnxGraphError naming the file and the problem, before any run.
5. Backend choice: which runtime ``auto`` picks for each device / installation.
"""
from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from benchmarks.dwpose_graphs import build
from musepose.pose import models
from musepose.pose.extract import DWPoseExtractor
from musepose.pose.models import CPU_PROVIDER, CUDA_PROVIDER, DWPoseModelError, DWPoseModelPaths
from musepose.pose.onnx_torch import OnnxGraphError, TorchOnnxSession, operator_inventory

ort = pytest.importorskip("onnxruntime")

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "dwpose-tiny"
RAW_TOL = 1e-4

#: The operators of the real exports (docs/POSE.md, "Operators"): YOLOX-L (Megvii export) and DWPose-l (mmdeploy).
DETECTOR_OPS = {"Conv", "Sigmoid", "Mul", "Add", "Concat", "Slice", "MaxPool", "Resize", "Reshape", "Transpose",
                "Shape", "Constant"}
POSE_OPS = {"Conv", "Sigmoid", "Mul", "Add", "Concat", "MaxPool", "GlobalAveragePool", "HardSigmoid", "Shape",
            "Slice", "Reshape", "Constant", "ReduceL2", "Clip", "Div", "MatMul", "Split", "Unsqueeze", "Squeeze",
            "Transpose", "Relu"}


@pytest.fixture(scope="module")
def arch_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("arch")
    files = {}
    for kind in ("detector", "pose"):
        files[kind] = root / f"{kind}.onnx"
        files[kind].write_bytes(build(kind, width=0.125, depth=0.34, seed=1))
    return files


def _ops(path) -> set[str]:
    import onnx

    return {n.op_type for n in onnx.load(str(path)).graph.node}


def _compare(path, feeds) -> float:
    ours = TorchOnnxSession(path).run(None, feeds)
    ref = ort.InferenceSession(str(path), providers=[CPU_PROVIDER]).run(None, feeds)
    assert [a.shape for a in ours] == [r.shape for r in ref]
    return max(float(np.abs(a - r).max()) for a, r in zip(ours, ref))


def test_yolox_shaped_graph_matches_onnxruntime(arch_files):
    path = arch_files["detector"]
    assert _ops(path) == DETECTOR_OPS
    image = np.random.default_rng(0).uniform(0, 255, (1, 3, 640, 640)).astype(np.float32)
    assert _compare(path, {"images": image}) <= RAW_TOL
    session = TorchOnnxSession(path)
    assert session.get_outputs()[0].shape == [1, 8400, 85]
    # every x * sigmoid(x) became one SiLU node; the head's two sigmoids per level stay
    assert sum(n.op == "SiLU" for n in session.nodes) > 50
    assert sum(n.op == "Sigmoid" for n in session.nodes) == 6


def test_rtmpose_shaped_graph_matches_onnxruntime_batched(arch_files):
    path = arch_files["pose"]
    assert _ops(path) == POSE_OPS
    crops = np.random.default_rng(1).standard_normal((3, 3, 384, 288)).astype(np.float32)
    assert _compare(path, {"input": crops}) <= RAW_TOL
    # batch items are independent: one crop alone gives its row of the batch
    session = TorchOnnxSession(path)
    full = session.run(["simcc_x"], {"input": crops})[0]
    one = session.run(["simcc_x"], {"input": crops[1:2]})[0]
    assert full.shape == (3, 133, 576) and np.abs(full[1:2] - one).max() <= 1e-5


def test_fp16_stays_finite_and_close(arch_files):
    """fp16 as on a GPU: the attention head computes in fp32 (its squared scores overflow fp16)."""
    crops = np.random.default_rng(2).standard_normal((2, 3, 384, 288)).astype(np.float32)
    ref = TorchOnnxSession(arch_files["pose"]).run(None, {"input": crops})
    half = TorchOnnxSession(arch_files["pose"], dtype=torch.float16).run(None, {"input": crops})
    for h, r in zip(half, ref):
        assert h.dtype == np.float32 and np.isfinite(h).all()
        assert np.abs(h - r).max() <= 0.03 * np.abs(r).max()


# --- operator forms, one small graph each ---------------------------------------------------------

def _graph(nodes, inputs, outputs, inits=(), opset=11):
    vi = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs]
    vo = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs]
    inits = [numpy_helper.from_array(np.asarray(v), n) for n, v in inits]
    model = helper.make_model(helper.make_graph(nodes, "g", vi, vo, inits),
                              opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    return model.SerializeToString()


_R = np.random.default_rng(3)
_X = _R.standard_normal((2, 4, 6, 6)).astype(np.float32)
_I64 = lambda *v: np.array(v, dtype=np.int64)  # noqa: E731
N = helper.make_node

CASES = {
    "batchnorm": ([N("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], epsilon=1e-3)],
                  [("s", _R.random(4).astype(np.float32) + .5), ("b", _R.random(4).astype(np.float32)),
                   ("m", _R.random(4).astype(np.float32)), ("v", _R.random(4).astype(np.float32) + .5)], 11),
    "conv_asym_pads_groups": ([N("Conv", ["x", "w"], ["y"], pads=[0, 1, 2, 1], strides=[2, 1], group=2)],
                              [("w", _R.standard_normal((6, 2, 3, 3)).astype(np.float32))], 11),
    "maxpool_asym_ceil": ([N("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], pads=[1, 0, 0, 1], strides=[2, 2],
                             ceil_mode=1)], [], 11),
    "flatten_gemm": ([N("Flatten", ["x"], ["f"], axis=1), N("Gemm", ["f", "w", "c"], ["y"], transB=1, alpha=.5, beta=2.)],
                     [("w", _R.standard_normal((5, 144)).astype(np.float32)), ("c", _R.random(5).astype(np.float32))], 11),
    "reducesum_sqrt_pow_13": ([N("Pow", ["x", "two"], ["p"]), N("ReduceSum", ["p", "ax"], ["s"], keepdims=1),
                               N("Sqrt", ["s"], ["y"])], [("two", np.float32(2.)), ("ax", _I64(-1))], 13),
    "reducemean_sub_exp": ([N("ReduceMean", ["x"], ["m"], axes=[2, 3], keepdims=1), N("Sub", ["x", "m"], ["d"]),
                            N("Exp", ["d"], ["y"])], [], 11),
    "clip_attrs_opset6": ([N("Clip", ["x"], ["y"], min=-.5, max=.5)], [], 6),
    "split_squeeze_unsqueeze_13": ([N("Split", ["x", "sp"], ["a", "b"], axis=1), N("Unsqueeze", ["a", "ax"], ["u"]),
                                    N("Squeeze", ["u", "ax"], ["s"]), N("Add", ["s", "b"], ["y"])],
                                   [("sp", _I64(2, 2)), ("ax", _I64(0))], 13),
    "split_equal_no_sizes": ([N("Split", ["x"], ["a", "b"], axis=2), N("Mul", ["a", "b"], ["y"])], [], 11),
    "resize_sizes_nearest": ([N("Resize", ["x", "", "", "sz"], ["y"], mode="nearest",
                                coordinate_transformation_mode="asymmetric", nearest_mode="floor")],
                             [("sz", _I64(2, 4, 9, 15))], 13),
    "resize_opset10_nearest": ([N("Resize", ["x", "sc"], ["y"], mode="nearest")],
                               [("sc", np.array([1, 1, 2, 3], np.float32))], 10),
    "resize_linear_half_pixel": ([N("Resize", ["x", "roi", "sc"], ["y"], mode="linear",
                                    coordinate_transformation_mode="half_pixel")],
                                 [("roi", np.zeros(0, np.float32)), ("sc", np.array([1, 1, 2, 1.5], np.float32))], 11),
    "resize_linear_align_corners": ([N("Resize", ["x", "roi", "sc"], ["y"], mode="linear",
                                       coordinate_transformation_mode="align_corners")],
                                    [("roi", np.zeros(0, np.float32)), ("sc", np.array([1, 1, 2, 2], np.float32))], 11),
    "slice_negative_step": ([N("Slice", ["x", "st", "en", "ax", "sp"], ["y"])],
                            [("st", _I64(-1, 4)), ("en", _I64(-100, 0)), ("ax", _I64(3, 2)), ("sp", _I64(-2, -1))], 11),
    "slice_attrs_opset9": ([N("Slice", ["x"], ["y"], starts=[1], ends=[1000], axes=[1])], [], 9),
    "shape_gather_cast_div_reshape": ([N("Shape", ["x"], ["sh"]), N("Gather", ["sh", "i"], ["g"], axis=0),
                                       N("Div", ["g", "two"], ["h"]), N("Concat", ["h", "m1"], ["ns"], axis=0),
                                       N("Reshape", ["x", "ns"], ["r"]), N("Cast", ["g"], ["gf"], to=1),
                                       N("Mul", ["r", "gf"], ["y"])],
                                      [("i", _I64(-4)), ("two", _I64(2)), ("m1", _I64(-1))], 11),
    "shape_start_end_15_identity": ([N("Shape", ["x"], ["sh"], start=3, end=4), N("Constant", [], ["z"],
                                     value=numpy_helper.from_array(_I64(0, -1))),
                                     N("Concat", ["z", "sh"], ["ns"], axis=0), N("Reshape", ["x", "ns"], ["r"]),
                                     N("Identity", ["r"], ["y"])], [], 15),
    "gather_float_constants": ([N("Constant", [], ["idx"], value_ints=[2, 0]), N("Gather", ["x", "idx"], ["g"], axis=1),
                                N("Constant", [], ["k"], value_float=1.5), N("Mul", ["g", "k"], ["y"])], [], 13),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_operator_forms_match_onnxruntime(case, tmp_path):
    nodes, inits, opset = CASES[case]
    path = tmp_path / f"{case}.onnx"
    path.write_bytes(_graph(nodes, [("x", list(_X.shape))], ["y"], inits, opset))
    assert _compare(path, {"x": _X}) <= 1e-5


def test_operator_inventory_lists_ops_and_attribute_values(arch_files):
    """What ``python -m musepose.pose.onnx_torch FILE`` prints: to check a real file against docs/POSE.md."""
    inv = operator_inventory(arch_files["detector"])
    assert set(inv) == DETECTOR_OPS
    assert inv["MaxPool"]["kernel_shape"] == {"[5, 5]", "[9, 9]", "[13, 13]"}
    assert inv["Resize"]["mode"] == {"nearest"} and inv["Transpose"]["perm"] == {"[0, 2, 1]"}


# --- errors: the file and the problem, before any run --------------------------------------------

def test_unknown_operator_named_with_the_file(tmp_path):
    path = tmp_path / "odd.onnx"
    path.write_bytes(_graph([N("Relu", ["x"], ["r"]), N("GridSample", ["r", "r"], ["y"]), N("Erf", ["y"], ["z"])],
                            [("x", [1, 2, 4, 4])], ["z"]))
    with pytest.raises(OnnxGraphError) as err:
        TorchOnnxSession(path)
    msg = str(err.value)
    assert msg.startswith(str(path)) and "operator GridSample is not implemented" in msg and "Erf" in msg
    assert "onnxruntime backend" in msg


def test_unsupported_attribute_value_named(tmp_path):
    path = tmp_path / "cubic.onnx"
    path.write_bytes(_graph([N("Resize", ["x", "roi", "sc"], ["y"], mode="cubic")], [("x", [1, 1, 4, 4])], ["y"],
                            [("roi", np.zeros(0, np.float32)), ("sc", np.array([1, 1, 2, 2], np.float32))]))
    with pytest.raises(OnnxGraphError, match=r"cubic\.onnx: .*Resize with mode='cubic'"):
        TorchOnnxSession(path)
    rounded = tmp_path / "rounded.onnx"  # opset 11 nearest without attributes: half_pixel, round_prefer_floor
    rounded.write_bytes(_graph([N("Resize", ["x", "roi", "sc"], ["y"])], [("x", [1, 1, 4, 4])], ["y"],
                               [("roi", np.zeros(0, np.float32)), ("sc", np.array([1, 1, 2, 2], np.float32))]))
    with pytest.raises(OnnxGraphError, match="coordinate_transformation_mode='half_pixel', "
                                             "nearest_mode='round_prefer_floor'"):
        TorchOnnxSession(rounded)


def test_malformed_and_truncated_files(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x89PNG not a model" * 50)
    with pytest.raises(OnnxGraphError, match=r"junk\.onnx: not a readable ONNX file"):
        TorchOnnxSession(junk)
    data = (FIXTURE / "dw-ll_ucoco_384.onnx").read_bytes()
    for cut in (len(data) // 2, 400, len(data) - 7):
        cut_file = tmp_path / f"cut{cut}.onnx"
        cut_file.write_bytes(data[:cut])
        with pytest.raises(OnnxGraphError) as err:
            TorchOnnxSession(cut_file)
        assert str(err.value).startswith(f"{cut_file}: ")
    with pytest.raises(OnnxGraphError, match="no such file"):
        TorchOnnxSession(tmp_path / "missing.onnx")


def test_graph_with_a_missing_node_is_incomplete(tmp_path):
    path = tmp_path / "hole.onnx"
    path.write_bytes(_graph([N("Relu", ["gone"], ["y"])], [("x", [1])], ["y"]))
    with pytest.raises(OnnxGraphError, match=r"hole\.onnx: node .* reads 'gone', which nothing before it defines"):
        TorchOnnxSession(path)


def test_wrong_inputs_at_run_name_file_and_input():
    path = FIXTURE / "yolox_l.onnx"
    session = TorchOnnxSession(path)
    ok = np.zeros((1, 3, 640, 640), np.float32)
    with pytest.raises(OnnxGraphError, match=r"yolox_l\.onnx: input 'images' must have shape \[1, 3, 640, 640\]"):
        session.run(None, {"images": np.zeros((1, 3, 320, 320), np.float32)})
    with pytest.raises(OnnxGraphError, match="must be float32, got float64"):
        session.run(None, {"images": ok.astype(np.float64)})
    with pytest.raises(OnnxGraphError, match=r"expects input\(s\) \['images'\], got \['input'\]"):
        session.run(None, {"input": ok})
    with pytest.raises(OnnxGraphError, match=r"no output named \['simcc_x'\]"):
        session.run(["simcc_x"], {"images": ok})


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_swapped_model_files_are_refused(backend):
    swapped = DWPoseModelPaths(str(FIXTURE / "dw-ll_ucoco_384.onnx"), str(FIXTURE / "yolox_l.onnx"))
    with pytest.raises(DWPoseModelError) as err:
        DWPoseExtractor(swapped, cache=None, device="cpu", backend=backend)
    msg = str(err.value)
    assert msg.startswith(str(FIXTURE / "dw-ll_ucoco_384.onnx")) and "not a DWPose detector model like yolox_l.onnx" in msg


def test_cancel_inside_a_torch_run():
    calls = []

    class Stop(Exception):
        pass

    def check():
        calls.append(1)
        if len(calls) == 3:
            raise Stop

    with pytest.raises(Stop):
        TorchOnnxSession(FIXTURE / "yolox_l.onnx").run(None, {"images": np.zeros((1, 3, 640, 640), np.float32)},
                                                      check_interrupt=check)
    assert len(calls) == 3


# --- which backend auto picks ------------------------------------------------------------------------

def _fake_ort(monkeypatch, providers):
    fake = types.ModuleType("onnxruntime")
    fake.get_available_providers = lambda: list(providers)
    monkeypatch.setitem(sys.modules, "onnxruntime", fake)


def test_auto_backend_choice(monkeypatch):
    _fake_ort(monkeypatch, [CUDA_PROVIDER, CPU_PROVIDER])
    assert models.resolve_runtime("auto", "cuda:1").describe() == "onnxruntime on cuda:1"
    assert models.resolve_runtime("auto", "mps").describe() == "torch on mps, float16"
    assert models.resolve_runtime("torch", "cuda:1").describe() == "torch on cuda:1, float16"
    assert models.resolve_runtime("auto", "cpu").backend == models.CPU_PREFERENCE
    _fake_ort(monkeypatch, [CPU_PROVIDER])  # CPU-only onnxruntime and a CUDA device: torch on the GPU
    assert models.resolve_runtime("auto", "cuda:0").describe() == "torch on cuda:0, float16"
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # not installed
    assert models.resolve_runtime("auto", "cpu").describe() == "torch on cpu"
    assert models.resolve_runtime("auto", "xpu:0").describe() == "torch on xpu:0, float16"
    with pytest.raises(ValueError, match="unknown pose backend 'tensorrt'"):
        models.resolve_runtime("tensorrt", "cpu")
