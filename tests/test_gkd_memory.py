"""GKD bytes per GPU (gkd_memory.py), against numbers worked by hand."""

import pytest

from puzzle import gkd_memory


def test_bytes_per_gpu_by_hand():
    # child 1000, parent 2000 parameters on 4 GPUs; root (embeddings + head) 100, largest layer 50; bf16
    rep = gkd_memory.bytes_per_gpu(1000, 2000, 4, parent_sharded=False, root_params=100, layer_params=50)
    assert rep.child_shards == 16 * 1000 // 4 == 4000
    assert rep.child_gathered == 2 * (100 + 2 * 50) + 4 * (100 + 50) == 1000
    assert rep.parent == 2 * 2000 and rep.total == 9000
    shard = gkd_memory.bytes_per_gpu(1000, 2000, 4, parent_sharded=True, root_params=100, layer_params=50)
    assert shard.parent == 2 * 1900 // 4 + 2 * (100 + 2 * 50) == 1350 and shard.total == 6350
    fp32 = gkd_memory.bytes_per_gpu(1000, 2000, 1, parent_sharded=False, compute_bytes=4)
    assert (fp32.child_shards, fp32.child_gathered, fp32.parent) == (16000, 0, 8000)
    with pytest.raises(ValueError, match="gpus = 0"):
        gkd_memory.bytes_per_gpu(1000, 2000, 0, parent_sharded=False)


def test_real_models_8b_fits_one_node_and_70b_needs_several():
    r8, l8 = 2 * 128256 * 4096, 218_112_000  # Llama-3.1-8B: untied embeddings + head; one layer
    b = gkd_memory.bytes_per_gpu(5_200_000_000, 8_030_000_000, 8, False, r8, l8)
    assert b.total == 10_400_000_000 + 8_048_934_912 + 16_060_000_000
    assert gkd_memory.fewest_nodes(5_200_000_000, 8_030_000_000, 8, 80e9, root_params=r8, layer_params=l8) == (
        1,
        False,
    )
    r70, l70 = 2 * 128256 * 8192, 855_654_400  # Llama-3.3-70B
    # 16 GPUs: 49 GB shards + 19.5 GB gathered + 16.2 GB parent = 84.6 GB > 80 GB; 24 GPUs still above 0.8 x 80
    assert gkd_memory.fewest_nodes(49_000_000_000, 70_550_000_000, 8, 80e9, root_params=r70, layer_params=l70) == (
        4,
        True,
    )
    assert gkd_memory.fewest_nodes(49_000_000_000, 70_550_000_000, 8, 80e9, max_nodes=1) is None


def test_parent_sharded_auto_above_a_quarter_of_a_gpu():
    # a 70B in bf16 (141.1 GB) is over a quarter of an 80 GB H100; an 8B (16.06 GB) is not; CPU: replicated
    sharded = gkd_memory.parent_sharded
    assert sharded("auto", 141.1e9, 80e9) and not sharded("auto", 16.06e9, 80e9)
    assert not sharded("auto", 20e9, 80e9) and sharded("auto", 20.000001e9, 80e9)  # strictly over a quarter
    assert not sharded("auto", 141.1e9, None)
    assert sharded("shard", 1, None) and not sharded("replicate", 1e12, 80e9)
