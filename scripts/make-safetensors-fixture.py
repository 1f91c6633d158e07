#!/usr/bin/env python3
"""Writes Tests/FedGateTensorsTests/Fixtures/python-made.safetensors with Python's `safetensors`
package (pip install safetensors numpy), so the Swift reader is tested against the reference writer."""
import numpy as np
from safetensors.numpy import save_file

tensors = {
    "dense.weight": np.arange(6, dtype=np.float32).reshape(2, 3) / 4,
    "dense.bias": np.array([-1.5, 2.25], dtype=np.float32),
    "scale": np.array([[1.0, -2.0], [3.5, 1e-3]], dtype=np.float64),
    "half": np.array([0.5, -2.0, 65504.0, 1e-4], dtype=np.float16),
    "scalar": np.array(7.0, dtype=np.float32),
}
save_file(tensors, "Tests/FedGateTensorsTests/Fixtures/python-made.safetensors", metadata={"format": "np", "made_by": "scripts/make-safetensors-fixture.py"})
