"""The planner, on the public config.json files of Llama-3.1-8B and -70B (no weights)."""

import json
from pathlib import Path

from puzzle import plan

REAL = Path(__file__).parent / "data" / "real-configs"
CFG_8B = json.loads((REAL / "Llama-3.1-8B.config.json").read_text())
CFG_70B = json.loads((REAL / "Llama-3.1-70B.config.json").read_text())


def test_activation_dump_bytes_by_hand():
    # 8B: x, h, y x 4096 x 2 bytes x 32 layers = 786,432 B = 768 KiB per token (SCALE.md)
    assert plan.activation_dump_bytes(CFG_8B, 1) == 3 * 4096 * 2 * 32 == 768 * 1024
    # 70B: 3 x 8192 x 2 x 80 = 3,932,160 B per token; the paper's 1B BLD tokens: 3.9 PB
    assert plan.activation_dump_bytes(CFG_70B, 10**9) == 3_932_160 * 10**9


def test_activation_tensors_match_the_stage():
    from puzzle import activations

    assert plan.ACTIVATION_TENSORS == len(activations.TENSORS)
    assert set(plan.ACTIVATION_DTYPE_BYTES) == set(activations.DTYPES)
    assert all(activations.DTYPES[k].itemsize == v for k, v in plan.ACTIVATION_DTYPE_BYTES.items())
