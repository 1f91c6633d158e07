#!/usr/bin/env python3
"""A silo's own training program for FedGate, in NumPy: an example of an external executor.

The gateway runs it in a private working folder holding
  task.json          the round: model kind, layer sizes, classes, columns, label, learning rate,
                     local steps, sampling rate, seed, and the names of the files below
  model.safetensors  the global model: one F32 tensor "parameters" (each layer's weights,
                     output-major, then its biases)
  train.csv          this silo's training rows, the plan's columns only, already standardised,
                     the label last
and reads back what this program writes there:
  update.safetensors one F32 tensor "delta": the trained model minus the global one
  metrics.json       {"examples": rows trained on, "train_loss": ..., any other numbers}

It trains single-layer models (logistic regression, softmax) with plain mini-batch SGD. It adds
no noise and clips nothing: the gateway clips the update and adds the plan's Gaussian noise, and
accounts for it, whatever the program does. Exit status 0 means success; anything else, and
anything written to stderr, is reported by the gateway.
"""
import json
import struct
import sys

import numpy as np


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    body = data[8 + length :]
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            raise ValueError(f"{path}: tensor {name} is {info['dtype']}, expected F32")
        start, end = info["data_offsets"]
        tensors[name] = np.frombuffer(body[start:end], dtype="<f4").reshape(info["shape"])
    return tensors


def write_safetensors(path, name, array):
    array = np.ascontiguousarray(array, dtype="<f4").ravel()
    header = {name: {"dtype": "F32", "shape": [int(array.size)], "data_offsets": [0, int(array.nbytes)]},
              "__metadata__": {"fedgate.kind": "update", "fedgate.executor": "numpy_sgd"}}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + array.tobytes())


def main():
    with open("task.json") as f:
        task = json.load(f)
    files = task["files"]
    sizes = task["layer_sizes"]
    if len(sizes) != 2:
        print(f"numpy_sgd trains single-layer models only; this plan's model is {task['model']} {sizes}", file=sys.stderr)
        return 2
    inputs, outputs = sizes
    params = read_safetensors(files["model"])["parameters"].astype(np.float64)
    weights = params[: inputs * outputs].reshape(outputs, inputs).copy()
    bias = params[inputs * outputs :].copy()

    rows = np.loadtxt(files["train"], delimiter=",", skiprows=1, ndmin=2)
    x, y = rows[:, :-1], rows[:, -1].astype(int)
    if x.shape[1] != inputs:
        print(f"train.csv has {x.shape[1]} features, the model {inputs}", file=sys.stderr)
        return 2
    rng = np.random.default_rng(task["seed"])
    batch = max(1, int(round(task["sampling_rate"] * len(x))))
    rate = task["learning_rate"]
    losses = []
    for _ in range(task["local_steps"]):
        pick = rng.choice(len(x), size=min(batch, len(x)), replace=False)
        xb, yb = x[pick], y[pick]
        z = xb @ weights.T + bias
        if outputs == 1:  # logistic regression: sigmoid of one logit
            p = 1 / (1 + np.exp(-z[:, 0]))
            error = (p - yb)[:, None]
            losses.append(float(-np.mean(yb * np.log(p + 1e-12) + (1 - yb) * np.log(1 - p + 1e-12))))
        else:  # softmax
            z -= z.max(axis=1, keepdims=True)
            p = np.exp(z)
            p /= p.sum(axis=1, keepdims=True)
            onehot = np.eye(outputs)[yb]
            error = p - onehot
            losses.append(float(-np.mean(np.log(p[np.arange(len(yb)), yb] + 1e-12))))
        weights -= rate * error.T @ xb / len(xb)
        bias -= rate * error.mean(axis=0)

    trained = np.concatenate([weights.ravel(), bias])
    write_safetensors(files["update"], "delta", trained - params)
    with open(files["metrics"], "w") as f:
        json.dump({"examples": int(len(x)), "train_loss": float(np.mean(losses)) if losses else 0.0}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
