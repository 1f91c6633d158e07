#!/usr/bin/env python3
"""Scores rows with a model pulled from FedGate's registry (`fedgate model pull VERSION --out
model.safetensors`), with NumPy alone: everything needed is in the file.

    python3 score.py model.safetensors rows.csv               # one prediction per row, as JSON lines
    python3 score.py model.safetensors rows.csv --label y     # and the accuracy against column y

The file holds each layer's `layerN.weight` ([out, in]) and `layerN.bias` ([out]), and metadata:
`fedgate.columns` (the input columns, in order), `fedgate.feature_means` and
`fedgate.feature_scales` (standardise each column as (x - mean) / scale first), ReLU between
layers, and a sigmoid output (the probability of label 1) or a softmax over labels 0..k-1.
"""
import csv
import json
import struct
import sys

import numpy as np


def load(path):
    """The tensors (by name, as float32 arrays) and the metadata of a safetensors file."""
    with open(path, "rb") as f:
        data = f.read()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    metadata = header.pop("__metadata__", {})
    base = 8 + length
    tensors = {}
    for name, t in header.items():
        if t["dtype"] != "F32":
            raise SystemExit(f"{path}: tensor {name} is {t['dtype']}, expected F32")
        begin, end = t["data_offsets"]
        tensors[name] = np.frombuffer(data[base + begin:base + end], dtype="<f4").reshape(t["shape"])
    return tensors, metadata


def predict(tensors, metadata, columns):
    """Labels and probabilities for rows given as {column: values}."""
    names = json.loads(metadata["fedgate.columns"])
    missing = [c for c in names if c not in columns]
    if missing:
        raise SystemExit(f"the rows lack the model's columns {missing}")
    x = np.column_stack([np.asarray(columns[c], dtype=np.float64) for c in names])
    x = (x - np.asarray(json.loads(metadata["fedgate.feature_means"]))) / np.asarray(json.loads(metadata["fedgate.feature_scales"]))
    layers = len(metadata["fedgate.layers"].split(",")) - 1
    for layer in range(layers):
        x = x @ tensors[f"layer{layer}.weight"].T.astype(np.float64) + tensors[f"layer{layer}.bias"]
        if layer < layers - 1:
            x = np.maximum(x, 0)
    if x.shape[1] == 1:
        p1 = 1 / (1 + np.exp(-x[:, 0]))
        return (p1 > 0.5).astype(int), np.column_stack([1 - p1, p1])
    e = np.exp(x - x.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    return p.argmax(axis=1), p


def main():
    args = sys.argv[1:]
    if len(args) not in (2, 4) or (len(args) == 4 and args[2] != "--label"):
        raise SystemExit(__doc__)
    tensors, metadata = load(args[0])
    with open(args[1], newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise SystemExit(f"{args[1]}: no rows")
    wanted = json.loads(metadata["fedgate.columns"]) + ([args[3]] if len(args) == 4 else [])
    columns = {}
    for name in wanted:
        if name not in rows[0]:
            raise SystemExit(f"{args[1]}: no column '{name}' (the model reads {wanted})")
        values = []
        for line, r in enumerate(rows, start=2):
            try:
                values.append(float(r[name]))
            except (TypeError, ValueError):
                raise SystemExit(f"{args[1]}:{line}: column '{name}' holds {r[name]!r}, not a number")
        columns[name] = values
    labels, probabilities = predict(tensors, metadata, columns)
    if len(args) == 4:
        truth = np.asarray(columns[args[3]]).astype(int)
        print(json.dumps({"rows": len(rows), "accuracy": float((labels == truth).mean())}))
    else:
        for label, p in zip(labels, probabilities):
            print(json.dumps({"label": int(label), "probabilities": [round(float(v), 6) for v in p]}))


if __name__ == "__main__":
    main()
