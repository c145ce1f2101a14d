#!/usr/bin/env python3
"""Independent MAC/param counter (cross-check for `onnx-prune inspect`).

Runs the model in onnxruntime (batch 1 for symbolic dims) with every Conv/Gemm/MatMul operand
exposed as an output, reads the real shapes, then applies the MAC rules of the cost model:
  Conv N*Cout*prod(out spatial)*(Cin/group)*prod(k); ConvTranspose N*Cin*prod(in spatial)*(Cout/group)*prod(k);
  Gemm M*N*K; MatMul prod(batch)*M*N*K.
Usage: count_macs.py MODEL [NAME=1x3x224x224 ...]  -> prints JSON {"macs":..,"params":..}
"""
import json
import sys

import numpy as np
import onnx


def main():
    path = sys.argv[1]
    overrides = {}
    for a in sys.argv[2:]:
        n, d = a.rsplit("=", 1)
        overrides[n] = [int(x) for x in d.split("x")]
    m = onnx.load(path)
    inits = {t.name for t in m.graph.initializer}
    for i in m.graph.input:
        if i.name in inits:
            continue
        dims = i.type.tensor_type.shape.dim
        want = overrides.get(i.name)
        for k, d in enumerate(dims):
            if want is not None:
                d.ClearField("dim_param")
                d.dim_value = want[k]
            elif not d.HasField("dim_value"):
                d.ClearField("dim_param")
                d.dim_value = 1
    # Real shapes: run the model in onnxruntime with every Conv/Gemm/MatMul input and output
    # exposed as a graph output.
    import onnxruntime as ort
    wanted = []
    for n in m.graph.node:
        if n.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
            wanted += [x for x in list(n.input[:2]) + [n.output[0]] if x]
    existing = {o.name for o in m.graph.output}
    for name in dict.fromkeys(wanted):
        if name not in existing and name not in inits:
            m.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {}
    np_types = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(double)": np.float64}
    for i in sess.get_inputs():
        feeds[i.name] = np.zeros([d if isinstance(d, int) else 1 for d in i.shape], dtype=np_types[i.type])
    names = [o.name for o in sess.get_outputs()]
    shapes = {n: list(v.shape) for n, v in zip(names, sess.run(names, feeds))}
    for t in m.graph.initializer:
        shapes[t.name] = list(t.dims)
    for n in m.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    shapes[n.output[0]] = list(a.t.dims)
    macs = 0
    for n in m.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        if n.op_type == "Conv":
            y = shapes[n.output[0]]
            w = shapes[n.input[1]]
            macs += int(np.prod(y)) * int(np.prod(w[1:]))
        elif n.op_type == "ConvTranspose":
            x = shapes[n.input[0]]
            w = shapes[n.input[1]]
            macs += int(np.prod(x)) * int(np.prod(w[1:]))
        elif n.op_type == "Gemm":
            a = shapes[n.input[0]]
            y = shapes[n.output[0]]
            k = a[0] if attrs.get("transA", 0) else a[1]
            macs += y[0] * y[1] * k
        elif n.op_type == "MatMul":
            a = shapes[n.input[0]]
            y = shapes[n.output[0]]
            macs += int(np.prod(y)) * a[-1]
    float_types = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}
    params = sum(int(np.prod(t.dims)) for t in m.graph.initializer if t.data_type in float_types)
    for n in m.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value" and a.t.data_type in float_types:
                    params += int(np.prod(a.t.dims))
                elif a.name in ("value_float",):
                    params += 1
                elif a.name == "value_floats":
                    params += len(a.floats)
    print(json.dumps({"macs": macs, "params": params}))


if __name__ == "__main__":
    main()
