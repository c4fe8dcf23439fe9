"""A small ONNX interpreter in torch: the DWPose files run where torch runs, without onnxruntime.

Why: onnxruntime is the one pose dependency a ComfyUI Manager install cannot get right (two
conflicting builds, the GPU one tied to a CUDA/cuDNN version), while every user already has a torch
that works on their GPU. So the two files users download (``yolox_l.onnx``, ``dw-ll_ucoco_384.onnx``)
are read with the ``onnx`` protobuf package and their own graph is executed node by node with torch
ops, on the file's own weights: nothing is converted, hand-copied or downloaded.

Only the operators these exports use are implemented (docs/POSE.md lists them and where the list
comes from); anything else is refused when the file is opened, naming the file and the operators.
:class:`TorchOnnxSession` mimics the part of ``onnxruntime.InferenceSession`` the pose code uses
(``get_inputs``, ``get_outputs``, ``run``), so both backends share the pre- and post-processing.

Precision: floating-point weights and activations run in ``dtype`` (fp32 on the CPU; fp16 on a GPU).
In reduced precision, the matrix products and norms of the pose model's attention head (:data:`FP32_OPS`)
run in fp32: their squared attention scores can exceed fp16's range. Integer (shape) tensors stay on
the CPU, where Reshape and Slice read them without a device round trip.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F


class OnnxGraphError(ValueError):
    """A file the torch backend cannot run: the message names the file and what is wrong."""


@dataclass(frozen=True)
class TensorInfo:
    """A graph input or output as onnxruntime describes it: name, shape (ints, or dim names/None), type."""

    name: str
    shape: list
    type: str


#: Ops whose floating inputs are computed in fp32 when the session runs in fp16/bf16.
FP32_OPS = frozenset({"MatMul", "Gemm", "ReduceL2", "ReduceSum", "ReduceMean", "Pow", "Sqrt"})

#: How many nodes run between two calls of the cancel callback (a YOLOX-L node takes ~1-20 ms on a CPU).
INTERRUPT_EVERY_NODES = 8

_ONNX_FLOAT_TYPES = {1: torch.float32, 10: torch.float16, 11: torch.float64, 16: torch.bfloat16}
_ONNX_INT_TYPES = {2: torch.uint8, 3: torch.int8, 5: torch.int16, 6: torch.int32, 7: torch.int64, 9: torch.bool}
_TYPE_NAMES = {1: "float", 10: "float16", 11: "double", 16: "bfloat16", 7: "int64", 6: "int32", 9: "bool"}


def _read_model(path: str):
    """The parsed ModelProto, or :class:`OnnxGraphError` for a missing, unreadable or truncated file."""
    import onnx
    from google.protobuf.message import DecodeError

    if not os.path.isfile(path):
        raise OnnxGraphError(f"{path}: no such file")
    try:
        model = onnx.load(path)
    except (DecodeError, ValueError, OSError, RuntimeError) as exc:
        raise OnnxGraphError(f"{path}: not a readable ONNX file (truncated, corrupt or another format): "
                             f"{type(exc).__name__}: {exc}") from exc
    if not model.graph.node:
        raise OnnxGraphError(f"{path}: the file holds no graph (truncated, or not an ONNX model)")
    return model


def _opset(model) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return 1


def _attributes(node) -> dict:
    from onnx import helper

    out = {}
    for attr in node.attribute:
        value = helper.get_attribute_value(attr)
        if isinstance(value, bytes):
            value = value.decode()
        out[attr.name] = value
    return out


def _to_tensor(array: np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Float arrays go to ``device`` in ``dtype``; integer/bool arrays stay on the CPU as they are."""
    t = torch.from_numpy(np.array(array, copy=True))
    if t.is_floating_point():
        return t.to(device=device, dtype=dtype)
    return t


def _value_info(v) -> TensorInfo:
    tt = v.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim]
    return TensorInfo(v.name, dims, f"tensor({_TYPE_NAMES.get(tt.elem_type, tt.elem_type)})")


@dataclass
class _Node:
    op: str
    name: str
    inputs: list
    outputs: list
    attrs: dict


class TorchOnnxSession:
    """One ONNX file, executed by torch on ``device`` in ``dtype``: an onnxruntime-like session.

    ``run(output_names, {input_name: float32 array})`` returns float32 numpy arrays, like onnxruntime.
    Opening checks everything that can be checked without running: the file parses, every operator
    (with its attributes) is implemented, and every tensor a node reads is defined before it.
    """

    #: ``run`` takes a ``check_interrupt`` callback (the extractor's cancel check; no helper thread needed).
    checks_interrupt = True

    def __init__(self, path: str | os.PathLike, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32):
        from onnx import numpy_helper

        self.path = str(path)
        self.device = torch.device(device)
        self.dtype = dtype
        model = _read_model(self.path)
        self.opset = _opset(model)
        graph = model.graph
        init_names = {i.name for i in graph.initializer}
        self._inputs = [_value_info(v) for v in graph.input if v.name not in init_names]
        self._outputs = [_value_info(v) for v in graph.output]
        self.nodes = [_Node(n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}::{n.op_type}",
                            n.name or f"#{i}", list(n.input), list(n.output), _attributes(n))
                      for i, n in enumerate(graph.node)]
        self._check_operators()
        self._check_dataflow(init_names)
        self.consts = {i.name: _to_tensor(numpy_helper.to_array(i), self.device, dtype) for i in graph.initializer}
        #: Convolutions in NHWC ("channels last"): several times faster than NCHW on the CPU (oneDNN) and the
        #: layout tensor cores want on CUDA. Elementwise ops keep the layout; results are the same numbers.
        self.channels_last = self.device.type in ("cpu", "cuda")
        if self.channels_last:
            self.consts = {k: v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v
                           for k, v in self.consts.items()}
        self.nodes = fuse_silu(self.nodes, {o.name for o in self._outputs})
        self._last_use = _last_uses(self.nodes)

    # --- what onnxruntime's session offers --------------------------------------------------

    def get_inputs(self) -> list[TensorInfo]:
        return list(self._inputs)

    def get_outputs(self) -> list[TensorInfo]:
        return list(self._outputs)

    def run(self, output_names: Sequence[str] | None, feeds: dict,
            check_interrupt: Callable[[], None] | None = None) -> list[np.ndarray]:
        """Float32 numpy outputs ``output_names`` (None: all) for ``feeds`` ({input name: float32 array}).

        ``check_interrupt`` (may raise to cancel) is called every :data:`INTERRUPT_EVERY_NODES` nodes.
        """
        names = [o.name for o in self._outputs] if not output_names else list(output_names)
        unknown = [n for n in names if n not in {o.name for o in self._outputs}]
        if unknown:
            raise OnnxGraphError(f"{self.path}: no output named {unknown}; the graph's outputs are "
                                 f"{[o.name for o in self._outputs]}")
        env = dict(self.consts)
        env.update(self._feed_tensors(feeds))
        keep = set(names)
        with torch.inference_mode():
            for index, node in enumerate(self.nodes):
                if check_interrupt is not None and index % INTERRUPT_EVERY_NODES == 0:
                    check_interrupt()
                self._run_node(node, env)
                for name in self._last_use.get(index, ()):
                    if name not in keep:
                        env.pop(name, None)
            return [env[n].detach().to("cpu", torch.float32).numpy() if env[n].is_floating_point()
                    else env[n].cpu().numpy() for n in names]

    # --- checks --------------------------------------------------------------------------------

    def _check_operators(self) -> None:
        bad: dict[str, str] = {}
        for node in self.nodes:
            problem = unsupported(node, self.opset)
            if problem and problem not in bad:
                bad[problem] = node.name
        if bad:
            listed = "; ".join(f"{p} (first at node '{n}')" for p, n in bad.items())
            raise OnnxGraphError(f"{self.path}: the torch backend cannot run this graph: {listed}. Use the "
                                 "onnxruntime backend for this file.")

    def _check_dataflow(self, init_names: set[str]) -> None:
        defined = set(init_names) | {i.name for i in self._inputs}
        for node in self.nodes:
            for name in node.inputs:
                if name and name not in defined:
                    raise OnnxGraphError(f"{self.path}: node '{node.name}' ({node.op}) reads '{name}', which nothing "
                                         "before it defines: the graph is incomplete (a truncated or corrupt file?)")
            defined.update(n for n in node.outputs if n)
        missing = [o.name for o in self._outputs if o.name not in defined]
        if missing:
            raise OnnxGraphError(f"{self.path}: graph output(s) {missing} are never computed: the graph is incomplete")

    def _feed_tensors(self, feeds: dict) -> dict:
        expected = {i.name: i for i in self._inputs}
        if set(feeds) != set(expected):
            raise OnnxGraphError(f"{self.path}: expects input(s) {sorted(expected)}, got {sorted(feeds)}")
        out = {}
        for name, value in feeds.items():
            arr = np.asarray(value)
            info = expected[name]
            if arr.dtype != np.float32 and info.type == "tensor(float)":
                raise OnnxGraphError(f"{self.path}: input '{name}' must be float32, got {arr.dtype}")
            if len(arr.shape) != len(info.shape) or any(isinstance(d, int) and d > 0 and d != s
                                                        for d, s in zip(info.shape, arr.shape)):
                raise OnnxGraphError(f"{self.path}: input '{name}' must have shape {info.shape}, got {list(arr.shape)}")
            out[name] = _to_tensor(arr, self.device, self.dtype)
        return out

    def _run_node(self, node: _Node, env: dict) -> None:
        args = [env[n] if n else None for n in node.inputs]
        if self.dtype != torch.float32 and node.op in FP32_OPS:
            args = [a.float() if a is not None and a.is_floating_point() else a for a in args]
        try:
            result = OPS[node.op](self, node, *args)
        except OnnxGraphError:
            raise
        except (RuntimeError, ValueError, IndexError, KeyError, TypeError) as exc:
            shapes = [tuple(a.shape) if a is not None else None for a in args]
            raise OnnxGraphError(f"{self.path}: node '{node.name}' ({node.op}) failed on inputs of shapes "
                                 f"{shapes}: {exc}") from exc
        results = result if isinstance(result, (tuple, list)) else (result,)
        for name, value in zip(node.outputs, results):
            if name:
                env[name] = value


def _last_uses(nodes: list[_Node]) -> dict[int, list[str]]:
    """{node index: tensor names read for the last time there}: what can be freed after each node."""
    last: dict[str, int] = {}
    for index, node in enumerate(nodes):
        for name in node.inputs:
            if name:
                last[name] = index
    out: dict[int, list[str]] = {}
    for name, index in last.items():
        out.setdefault(index, []).append(name)
    return out


def fuse_silu(nodes: list[_Node], graph_outputs: set[str]) -> list[_Node]:
    """Replace each ``y = Mul(x, Sigmoid(x))`` pair (how exporters write SiLU) by one SiLU node.

    Same arithmetic, one pass over the activation instead of two; the sigmoid's output must feed
    nothing but that Mul. When nothing else reads ``x`` (a convolution's output, as everywhere in
    DWPose) the SiLU overwrites it in place instead of allocating a new activation.
    """
    readers: dict[str, list[int]] = {}
    for index, node in enumerate(nodes):
        for name in node.inputs:
            readers.setdefault(name, []).append(index)
    computed = {name for node in nodes for name in node.outputs}
    drop: set[int] = set()
    out = list(nodes)
    for index, node in enumerate(nodes):
        if node.op != "Sigmoid" or node.outputs[0] in graph_outputs:
            continue
        users = readers.get(node.outputs[0], [])
        if len(users) != 1:
            continue
        mul = nodes[users[0]]
        x = node.inputs[0]
        if mul.op == "Mul" and sorted(mul.inputs) == sorted([x, node.outputs[0]]):
            drop.add(index)
            inplace = x in computed and x not in graph_outputs and sorted(readers[x]) == sorted([index, users[0]])
            out[users[0]] = _Node("SiLU", mul.name, [x], mul.outputs, {"inplace": inplace})
    return [n for i, n in enumerate(out) if i not in drop]


# --- operators --------------------------------------------------------------------------------------

def _ints(t: torch.Tensor | None) -> list[int] | None:
    return None if t is None else [int(v) for v in t.reshape(-1).tolist()]


def _axes(node: _Node, axes_input: torch.Tensor | None, opset: int, since: int) -> list[int] | None:
    """Axes from the attribute (before opset ``since``) or from the optional input (from ``since``)."""
    if opset >= since:
        return _ints(axes_input)
    return node.attrs.get("axes")


def _sym_pads(pads: list[int], rank: int) -> tuple[list[int] | None, list[int]]:
    """ONNX pads [b1, b2, ..., e1, e2, ...] -> (symmetric per-dim padding or None, F.pad list)."""
    begin, end = pads[:rank], pads[rank:]
    if begin == end:
        return begin, []
    flat: list[int] = []
    for b, e in zip(reversed(begin), reversed(end)):
        flat += [b, e]
    return None, flat


def op_conv(s, node, x, w, b=None):
    a = node.attrs
    if x.dim() != 4:
        raise OnnxGraphError(f"{s.path}: node '{node.name}': only 2-D Conv is supported, got a {x.dim()}-D input")
    sym, flat = _sym_pads(a.get("pads", [0, 0, 0, 0]), 2)
    if flat:
        x = F.pad(x, flat)
    x = x.to(w.dtype)
    if s.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return F.conv2d(x, w, b, stride=a.get("strides", 1), padding=sym or 0, dilation=a.get("dilations", 1),
                    groups=a.get("group", 1))


def op_maxpool(s, node, x):
    a = node.attrs
    sym, flat = _sym_pads(a.get("pads", [0, 0, 0, 0]), 2)
    if flat:
        x = F.pad(x, flat, value=float("-inf"))
    return F.max_pool2d(x, a["kernel_shape"], stride=a.get("strides", 1), padding=sym or 0,
                        dilation=a.get("dilations", 1), ceil_mode=bool(a.get("ceil_mode", 0)))


def op_resize(s, node, x, *rest):
    """Resize (opset 10: X, scales; 11+: X, roi, scales, sizes): nearest (asymmetric, floor) or linear."""
    scales = rest[0] if s.opset < 11 else (rest[1] if len(rest) > 1 else None)
    sizes = rest[2] if len(rest) > 2 else None
    mode = node.attrs.get("mode", "nearest")
    if sizes is not None and sizes.numel():
        size = _ints(sizes)[2:]
        kw = {"size": size}
    else:
        factors = [float(v) for v in scales.reshape(-1).tolist()]
        if factors[:2] != [1.0, 1.0]:
            raise OnnxGraphError(f"{s.path}: node '{node.name}': Resize over batch or channels is not supported")
        kw = {"scale_factor": factors[2:]}
    if mode == "nearest":
        return F.interpolate(x, mode="nearest", **kw)
    align = node.attrs.get("coordinate_transformation_mode") == "align_corners"
    return F.interpolate(x, mode="bilinear" if x.dim() == 4 else "linear", align_corners=align, **kw)


def op_slice(s, node, x, starts=None, ends=None, axes=None, steps=None):
    if s.opset < 10:
        starts, ends, axes = node.attrs["starts"], node.attrs["ends"], node.attrs.get("axes")
        steps = None
    else:
        starts, ends, axes, steps = _ints(starts), _ints(ends), _ints(axes), _ints(steps)
    axes = axes if axes is not None else list(range(len(starts)))
    steps = steps if steps is not None else [1] * len(starts)
    index: list = [slice(None)] * x.dim()
    flips = []
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis %= x.dim()
        picked = range(*slice(start, end, step).indices(x.shape[axis]))
        if step > 0:
            index[axis] = slice(picked.start, max(picked.stop, picked.start), step)
        else:
            flips.append((axis, list(picked)))
    out = x[tuple(index)]
    for axis, picked in flips:
        out = out.index_select(axis, torch.tensor(picked, dtype=torch.long, device=out.device))
    return out


def op_split(s, node, x, split=None):
    axis = node.attrs.get("axis", 0)
    sizes = _ints(split) if s.opset >= 13 else node.attrs.get("split")
    if not sizes:
        n = len(node.outputs)
        sizes = [x.shape[axis] // n] * n
    return torch.split(x, sizes, dim=axis)


def op_reshape(s, node, x, shape):
    dims = _ints(shape)
    if not node.attrs.get("allowzero", 0):
        dims = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]
    return x.reshape(dims)


def op_squeeze(s, node, x, axes=None):
    axes = _axes(node, axes, s.opset, 13)
    if axes is None:
        return x.squeeze()
    keep = [d for i, d in enumerate(x.shape) if i not in {a % x.dim() for a in axes}]
    return x.reshape(keep)


def op_unsqueeze(s, node, x, axes=None):
    axes = _axes(node, axes, s.opset, 13)
    rank = x.dim() + len(axes)
    for axis in sorted(a % rank for a in axes):
        x = x.unsqueeze(axis)
    return x


def op_shape(s, node, x):
    dims = list(x.shape)[node.attrs.get("start", 0):node.attrs.get("end", None)]
    return torch.tensor(dims, dtype=torch.int64)


def op_gather(s, node, x, indices):
    axis = node.attrs.get("axis", 0) % x.dim()
    idx = indices.to(device=x.device, dtype=torch.long)
    idx = torch.where(idx < 0, idx + x.shape[axis], idx)
    return x.index_select(axis, idx.reshape(-1)).reshape(list(x.shape[:axis]) + list(idx.shape)
                                                          + list(x.shape[axis + 1:]))


def op_cast(s, node, x):
    to = node.attrs["to"]
    if to in _ONNX_FLOAT_TYPES:
        return x.to(device=s.device, dtype=s.dtype)
    if to in _ONNX_INT_TYPES:
        return x.to(_ONNX_INT_TYPES[to])
    raise OnnxGraphError(f"{s.path}: node '{node.name}': Cast to ONNX type {to} is not supported")


def op_constant(s, node):
    from onnx import numpy_helper

    a = node.attrs
    if "value" in a:
        return _to_tensor(numpy_helper.to_array(a["value"]), s.device, s.dtype)
    if "value_float" in a or "value_floats" in a:
        return _to_tensor(np.asarray(a.get("value_float", a.get("value_floats")), np.float32), s.device, s.dtype)
    return torch.tensor(a.get("value_int", a.get("value_ints")), dtype=torch.int64)


def op_reduce(fn: Callable, axes_input_since: int):
    def run(s, node, x, axes=None):
        dims = _axes(node, axes, s.opset, axes_input_since)
        keep = bool(node.attrs.get("keepdims", 1))
        if not dims:
            if node.attrs.get("noop_with_empty_axes", 0):
                return x
            dims = list(range(x.dim()))
        return fn(x, [d % x.dim() for d in dims], keep)
    return run


def op_clip(s, node, x, lo=None, hi=None):
    if s.opset < 11:
        lo_v, hi_v = node.attrs.get("min"), node.attrs.get("max")
    else:
        lo_v = None if lo is None else lo.to(x.device, x.dtype)
        hi_v = None if hi is None else hi.to(x.device, x.dtype)
    return torch.clamp(x, lo_v, hi_v)


def op_div(s, node, a, b):
    if a.is_floating_point() or b.is_floating_point():
        return a / b
    return torch.div(a, b, rounding_mode="trunc")


def op_gemm(s, node, a, b, c=None):
    at = node.attrs
    a = a.t() if at.get("transA", 0) else a
    b = b.t() if at.get("transB", 0) else b
    y = at.get("alpha", 1.0) * (a @ b)
    return y if c is None else y + at.get("beta", 1.0) * c


def op_batchnorm(s, node, x, scale, bias, mean, var):
    return F.batch_norm(x, mean, var, scale, bias, training=False, eps=node.attrs.get("epsilon", 1e-5))


OPS: dict[str, Callable] = {
    "Conv": op_conv,
    "MaxPool": op_maxpool,
    "GlobalAveragePool": lambda s, n, x: x.mean(dim=tuple(range(2, x.dim())), keepdim=True),
    "BatchNormalization": op_batchnorm,
    "Resize": op_resize,
    "Concat": lambda s, n, *xs: torch.cat([x.to(xs[0].device) for x in xs], dim=n.attrs["axis"]),
    "Split": op_split,
    "Slice": op_slice,
    "Reshape": op_reshape,
    "Flatten": lambda s, n, x: x.reshape(int(np.prod(x.shape[:n.attrs.get("axis", 1)])), -1),
    "Transpose": lambda s, n, x: x.permute(n.attrs.get("perm", list(range(x.dim()))[::-1])),
    "Squeeze": op_squeeze,
    "Unsqueeze": op_unsqueeze,
    "Shape": op_shape,
    "Gather": op_gather,
    "Cast": op_cast,
    "Constant": op_constant,
    "Identity": lambda s, n, x: x,
    "Add": lambda s, n, a, b: a + b,
    "Sub": lambda s, n, a, b: a - b,
    "Mul": lambda s, n, a, b: a * b,
    "Div": op_div,
    "Pow": lambda s, n, a, b: torch.pow(a, b.to(a.device)),
    "Sqrt": lambda s, n, x: torch.sqrt(x),
    "Exp": lambda s, n, x: torch.exp(x),
    "Sigmoid": lambda s, n, x: torch.sigmoid(x),
    "SiLU": lambda s, n, x: F.silu(x, inplace=n.attrs["inplace"]),
    "Relu": lambda s, n, x: F.relu(x),
    "HardSigmoid": lambda s, n, x: torch.clamp(x * n.attrs.get("alpha", 0.2) + n.attrs.get("beta", 0.5), 0, 1),
    "Clip": op_clip,
    "MatMul": lambda s, n, a, b: torch.matmul(a, b),
    "Gemm": op_gemm,
    "ReduceMean": op_reduce(lambda x, d, k: x.mean(dim=d, keepdim=k), 18),
    "ReduceSum": op_reduce(lambda x, d, k: x.sum(dim=d, keepdim=k), 13),
    "ReduceL2": op_reduce(lambda x, d, k: torch.linalg.vector_norm(x, 2, dim=d, keepdim=k), 18),
}

#: Attribute values the operators above do not implement: {op: {attribute: allowed values}}.
_ALLOWED_ATTRS = {
    "Conv": {"auto_pad": {"NOTSET"}},
    "MaxPool": {"auto_pad": {"NOTSET"}, "storage_order": {0}},
    "Resize": {"mode": {"nearest", "linear"}, "antialias": {0},
               "coordinate_transformation_mode": {"asymmetric", "half_pixel", "pytorch_half_pixel", "align_corners"}},
}


def unsupported(node: _Node, opset: int) -> str | None:
    """Why ``node`` cannot run here (operator or attribute value), or None when it can."""
    if node.op not in OPS or node.op == "SiLU":
        return f"operator {node.op} is not implemented"
    for attr, allowed in _ALLOWED_ATTRS.get(node.op, {}).items():
        if attr in node.attrs and node.attrs[attr] not in allowed:
            return f"{node.op} with {attr}={node.attrs[attr]!r}"
    if node.op == "MaxPool" and len([o for o in node.outputs if o]) > 1:
        return "MaxPool with an Indices output"
    if node.op == "Resize":
        return _resize_problem(node, opset)
    return None


def _resize_problem(node: _Node, opset: int) -> str | None:
    """Resize runs as torch's interpolate: nearest = asymmetric coordinates with floor (opset 10's only
    form; from opset 11 it must be spelled out, the defaults are half_pixel and round_prefer_floor), or
    linear with half-pixel or align-corners coordinates."""
    mode = node.attrs.get("mode", "nearest")
    ctm = node.attrs.get("coordinate_transformation_mode", "asymmetric" if opset < 11 else "half_pixel")
    rounding = node.attrs.get("nearest_mode", "floor" if opset < 11 else "round_prefer_floor")
    if (mode == "nearest") != (ctm == "asymmetric") or (mode == "nearest" and rounding != "floor"):
        return f"Resize with mode={mode!r}, coordinate_transformation_mode={ctm!r}, nearest_mode={rounding!r}"
    return None


def operator_inventory(path: str | os.PathLike) -> dict[str, dict[str, set]]:
    """{operator: {attribute: set of values seen}} of an ONNX file: what a new export would need.

    For checking a file against docs/POSE.md's list (``python -m musepose.pose.onnx_torch FILE``).
    """
    model = _read_model(str(path))
    out: dict[str, dict[str, set]] = {}
    for node in model.graph.node:
        attrs = out.setdefault(node.op_type, {})
        for name, value in _attributes(node).items():
            attrs.setdefault(name, set()).add(repr(value) if not isinstance(value, (str, int, float)) else value)
    return out


if __name__ == "__main__":  # python -m musepose.pose.onnx_torch yolox_l.onnx dw-ll_ucoco_384.onnx
    import sys

    for file in sys.argv[1:]:
        print(f"{file} (opset {_opset(_read_model(file))}):")
        for op, attrs in sorted(operator_inventory(file).items()):
            print(f"  {op}: " + ", ".join(f"{k}={sorted(map(str, v))}" for k, v in sorted(attrs.items())))
