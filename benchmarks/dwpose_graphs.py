"""Random-weight networks shaped like the two DWPose exports, written in torch and exported to ONNX.

Why: the real ``yolox_l.onnx`` and ``dw-ll_ucoco_384.onnx`` are not available to the tests, but the
torch ONNX backend must run every operator (with the attributes) they use. These modules follow the
two architectures as their exporters see them (layer types, kernel sizes, strides, paddings, the
head's reshapes and attention), with random weights, and are exported the way the real files were:
the legacy TorchScript exporter at opset 11, YOLOX with a static ``[1, 3, 640, 640]`` input named
``images`` and one output ``output`` ``[1, 8400, 85]``; the pose model with input ``input``
``[batch, 3, 384, 288]`` (symbolic batch) and outputs ``simcc_x`` ``[batch, 133, 576]`` and
``simcc_y`` ``[batch, 133, 768]``.

``width``/``depth`` scale channels and block counts: 1.0/1.0 is the size of YOLOX-L and
CSPNeXt-L/RTMPose-l (what ``benchmarks/pose_backends.py`` times); the tests use small values so that a
graph builds and runs in about a second while keeping every layer type and the real input sizes.
Used by tests/test_pose_onnx_torch.py and benchmarks/pose_backends.py.
"""
from __future__ import annotations

import io

import torch
from torch import nn

OPSET = 11


def silu(x: torch.Tensor) -> torch.Tensor:
    """SiLU written as the YOLOX export writes it (x * sigmoid(x)): Sigmoid + Mul in the graph."""
    return x * torch.sigmoid(x)


class ConvBnAct(nn.Module):
    """Conv + BatchNorm (folded into the Conv by the exporter) + SiLU; ``groups=c`` gives a depthwise conv."""

    def __init__(self, cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1, act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = act

    def forward(self, x):
        x = self.bn(self.conv(x))
        return silu(x) if self.act else x


def _randomise_norms(module: nn.Module, seed: int) -> None:
    """Give every BatchNorm non-trivial statistics so the folded Conv weights are not the raw ones."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)


# --- YOLOX-L-like detector (CSPDarknet with Focus stem, SPP, PAFPN, decoupled head) -----------------

class Bottleneck(nn.Module):
    def __init__(self, c: int, shortcut: bool):
        super().__init__()
        self.conv1, self.conv2, self.shortcut = ConvBnAct(c, c, 1), ConvBnAct(c, c, 3), shortcut

    def forward(self, x):
        y = self.conv2(self.conv1(x))
        return x + y if self.shortcut else y


class CSP(nn.Module):
    """Cross-stage-partial layer: two 1x1 branches, ``n`` bottlenecks on one, concat, 1x1."""

    def __init__(self, cin: int, cout: int, n: int, shortcut: bool = True):
        super().__init__()
        mid = cout // 2
        self.main, self.short = ConvBnAct(cin, mid), ConvBnAct(cin, mid)
        self.blocks = nn.Sequential(*[Bottleneck(mid, shortcut) for _ in range(n)])
        self.final = ConvBnAct(2 * mid, cout)

    def forward(self, x):
        return self.final(torch.cat([self.blocks(self.main(x)), self.short(x)], 1))


class SPP(nn.Module):
    """1x1 conv, max pools 5/9/13 (stride 1, same padding) concatenated with their input, 1x1 conv."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1, self.conv2 = ConvBnAct(cin, cin // 2), ConvBnAct(cin // 2 * 4, cout)
        self.pools = nn.ModuleList(nn.MaxPool2d(k, 1, k // 2) for k in (5, 9, 13))

    def forward(self, x):
        x = self.conv1(x)
        return self.conv2(torch.cat([x] + [p(x) for p in self.pools], 1))


class YoloxLike(nn.Module):
    """``[1, 3, 640, 640]`` raw BGR -> ``[1, 8400, 85]`` (box, sigmoid objectness, 80 sigmoid classes)."""

    def __init__(self, width: float = 1.0, depth: float = 1.0, classes: int = 80):
        super().__init__()
        c = [max(8, int(v * width)) for v in (64, 128, 256, 512, 1024)]
        n = max(1, round(3 * depth))
        self.stem = ConvBnAct(12, c[0], 3)
        self.dark2 = nn.Sequential(ConvBnAct(c[0], c[1], 3, 2), CSP(c[1], c[1], n))
        self.dark3 = nn.Sequential(ConvBnAct(c[1], c[2], 3, 2), CSP(c[2], c[2], 3 * n))
        self.dark4 = nn.Sequential(ConvBnAct(c[2], c[3], 3, 2), CSP(c[3], c[3], 3 * n))
        self.dark5 = nn.Sequential(ConvBnAct(c[3], c[4], 3, 2), SPP(c[4], c[4]), CSP(c[4], c[4], n, False))
        self.lat0, self.up = ConvBnAct(c[4], c[3]), nn.Upsample(scale_factor=2, mode="nearest")
        self.csp_p4 = CSP(2 * c[3], c[3], n, False)
        self.lat1, self.csp_p3 = ConvBnAct(c[3], c[2]), CSP(2 * c[2], c[2], n, False)
        self.down2, self.csp_n3 = ConvBnAct(c[2], c[2], 3, 2), CSP(2 * c[2], c[3], n, False)
        self.down1, self.csp_n4 = ConvBnAct(c[3], c[3], 3, 2), CSP(2 * c[3], c[4], n, False)
        hid = c[2]
        self.stems = nn.ModuleList(ConvBnAct(ci, hid) for ci in (c[2], c[3], c[4]))
        self.cls_convs = nn.ModuleList(nn.Sequential(ConvBnAct(hid, hid, 3), ConvBnAct(hid, hid, 3)) for _ in range(3))
        self.reg_convs = nn.ModuleList(nn.Sequential(ConvBnAct(hid, hid, 3), ConvBnAct(hid, hid, 3)) for _ in range(3))
        self.cls_preds = nn.ModuleList(nn.Conv2d(hid, classes, 1) for _ in range(3))
        self.reg_preds = nn.ModuleList(nn.Conv2d(hid, 4, 1) for _ in range(3))
        self.obj_preds = nn.ModuleList(nn.Conv2d(hid, 1, 1) for _ in range(3))

    def forward(self, x):
        x = torch.cat([x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], 1)  # Focus
        x3 = self.dark3(self.dark2(self.stem(x)))
        x4 = self.dark4(x3)
        x5 = self.dark5(x4)
        f5 = self.lat0(x5)
        p4 = self.csp_p4(torch.cat([self.up(f5), x4], 1))
        f4 = self.lat1(p4)
        p3 = self.csp_p3(torch.cat([self.up(f4), x3], 1))
        n3 = self.csp_n3(torch.cat([self.down2(p3), f4], 1))
        n4 = self.csp_n4(torch.cat([self.down1(n3), f5], 1))
        outs = []
        for i, feat in enumerate((p3, n3, n4)):
            feat = self.stems[i](feat)
            cls, reg = self.cls_convs[i](feat), self.reg_convs[i](feat)
            out = torch.cat([self.reg_preds[i](reg), self.obj_preds[i](reg).sigmoid(), self.cls_preds[i](cls).sigmoid()], 1)
            outs.append(out.flatten(start_dim=2))
        return torch.cat(outs, 2).permute(0, 2, 1)


# --- RTMPose-l-like pose model (CSPNeXt backbone, SimCC head with a gated attention unit) ---------------

class NeXtBlock(nn.Module):
    """3x3 conv, then a depthwise-separable 5x5 (depthwise 5x5 + pointwise 1x1), plus the input."""

    def __init__(self, c: int, shortcut: bool = True):
        super().__init__()
        self.conv1 = ConvBnAct(c, c, 3)
        self.dw, self.pw = ConvBnAct(c, c, 5, groups=c), ConvBnAct(c, c, 1)
        self.shortcut = shortcut

    def forward(self, x):
        y = self.pw(self.dw(self.conv1(x)))
        return x + y if self.shortcut else y


class NeXtCSP(nn.Module):
    """CSP layer of CSPNeXt: like :class:`CSP` plus channel attention (GAP, 1x1 conv, hard sigmoid)."""

    def __init__(self, cin: int, cout: int, n: int, shortcut: bool = True):
        super().__init__()
        mid = cout // 2
        self.main, self.short = ConvBnAct(cin, mid), ConvBnAct(cin, mid)
        self.blocks = nn.Sequential(*[NeXtBlock(mid, shortcut) for _ in range(n)])
        self.fc, self.gate = nn.Conv2d(2 * mid, 2 * mid, 1), nn.Hardsigmoid()
        self.final = ConvBnAct(2 * mid, cout)

    def forward(self, x):
        y = torch.cat([self.blocks(self.main(x)), self.short(x)], 1)
        y = y * self.gate(self.fc(nn.functional.adaptive_avg_pool2d(y, 1)))
        return self.final(y)


class ScaleNormLike(nn.Module):
    """x / max(||x||_2 * dim^-0.5, eps) * g over the last axis (ReduceL2, Mul, Clip, Div, Mul)."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.scale, self.eps, self.g = dim ** -0.5, eps, nn.Parameter(torch.rand(1) + 0.5)

    def forward(self, x):
        norm = torch.linalg.norm(x, dim=-1, keepdim=True) * self.scale
        return x / norm.clamp(min=self.eps) * self.g


class GatedAttention(nn.Module):
    """Self-attention gated unit of the SimCC head over the keypoint tokens ``[B, K, d]``."""

    def __init__(self, d: int, s: int = 128, expansion: int = 2):
        super().__init__()
        self.e, self.s = d * expansion, s
        self.ln = ScaleNormLike(d)
        self.uv = nn.Linear(d, 2 * self.e + s, bias=False)
        self.gamma, self.beta = nn.Parameter(torch.rand(2, s)), nn.Parameter(torch.rand(2, s))
        self.o = nn.Linear(self.e, d, bias=False)
        self.res = nn.Parameter(torch.rand(d) + 0.5)

    def forward(self, x):
        uv = silu(self.uv(self.ln(x)))
        u, v, base = torch.split(uv, [self.e, self.e, self.s], dim=2)
        base = base.unsqueeze(2) * self.gamma[None, None, :] + self.beta
        q, k = torch.unbind(base, dim=2)
        kernel = torch.square(torch.relu(torch.bmm(q, k.permute(0, 2, 1)) / self.s ** 0.5))
        return x * self.res + self.o(u * torch.bmm(kernel, v))


class RtmposeLike(nn.Module):
    """``[B, 3, 384, 288]`` normalised RGB crops -> SimCC logits ``[B, 133, 576]`` and ``[B, 133, 768]``."""

    def __init__(self, width: float = 1.0, depth: float = 1.0, keypoints: int = 133, hidden: int = 256):
        super().__init__()
        c = [max(8, int(v * width)) for v in (64, 128, 256, 512, 1024)]
        n = [max(1, round(b * depth)) for b in (3, 6, 6, 3)]
        self.stem = nn.Sequential(ConvBnAct(3, c[0] // 2, 3, 2), ConvBnAct(c[0] // 2, c[0] // 2, 3),
                                  ConvBnAct(c[0] // 2, c[0], 3))
        stages = []
        for i in range(4):
            layers = [ConvBnAct(c[i], c[i + 1], 3, 2)]
            if i == 3:
                layers.append(SPP(c[4], c[4]))
            layers.append(NeXtCSP(c[i + 1], c[i + 1], n[i], shortcut=i < 3))
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.final = nn.Conv2d(c[4], keypoints, 7, padding=3)
        tokens = (384 // 32) * (288 // 32)
        self.mlp = nn.Sequential(ScaleNormLike(tokens), nn.Linear(tokens, hidden, bias=False))
        self.gau = GatedAttention(hidden)
        self.cls_x, self.cls_y = nn.Linear(hidden, 288 * 2, bias=False), nn.Linear(hidden, 384 * 2, bias=False)

    def forward(self, x):
        feats = torch.flatten(self.final(self.stages(self.stem(x))), 2)
        feats = self.gau(self.mlp(feats))
        return self.cls_x(feats), self.cls_y(feats)


@torch.no_grad()
def _calibrate_simcc(module: "RtmposeLike") -> None:
    """Scale the two SimCC classifiers so the logits peak near 1, as the real model's do (their maxima are
    the keypoint scores). Random weights otherwise give logits in the hundreds, where fp32 rounding alone
    differs between two correct runtimes by more than the 1e-4 the parity tests hold them to."""
    crops = torch.randn(2, 3, 384, 288, generator=torch.Generator().manual_seed(0))
    peak = max(float(t.abs().max()) for t in module(crops))
    module.cls_x.weight.div_(peak)
    module.cls_y.weight.div_(peak)


def export(module: nn.Module, kind: str, path=None, seed: int = 0) -> bytes:
    """Randomise ``module``'s norms, export it like the real ``kind`` file ("detector" or "pose").

    Returns the ONNX bytes (also written to ``path`` when given).
    """
    _randomise_norms(module, seed)
    module.eval()
    if kind == "pose":
        _calibrate_simcc(module)
    buf = io.BytesIO()
    if kind == "detector":
        args, names, dyn = (torch.zeros(1, 3, 640, 640),), (["images"], ["output"]), None
    else:
        args = (torch.zeros(2, 3, 384, 288),)
        names = (["input"], ["simcc_x", "simcc_y"])
        dyn = {"input": {0: "batch"}, "simcc_x": {0: "batch"}, "simcc_y": {0: "batch"}}
    with torch.no_grad():
        torch.onnx.export(module, args, buf, dynamo=False, opset_version=OPSET, input_names=names[0],
                          output_names=names[1], dynamic_axes=dyn)
    data = buf.getvalue()
    if path is not None:
        with open(path, "wb") as f:
            f.write(data)
    return data


def build(kind: str, width: float, depth: float, seed: int = 0) -> bytes:
    """ONNX bytes of a random-weight YOLOX-like ("detector") or RTMPose-like ("pose") network."""
    torch.manual_seed(seed)
    module = YoloxLike(width, depth) if kind == "detector" else RtmposeLike(width, depth)
    return export(module, kind, seed=seed)
