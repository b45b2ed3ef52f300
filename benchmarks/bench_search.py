"""Search speed at the paper's scale: 80 layers x 54 compositions (6 attention x 9 FFN variants).

Prints the MIP build time, single solves under a few budgets, and Pareto sweeps over throughput
targets with one and with several diverse solutions per point, on random but realistic tables
(`search.synthetic.synthetic_tables`: roofline costs of a Llama-70B-like layer at fp8, scores that
grow as variants shrink). Wall and CPU seconds both, since shared machines inflate wall time.

    python benchmarks/bench_search.py [--layers 80] [--points 20] [--solutions 2] [--diversity 0.1]
    python benchmarks/bench_search.py --nvlabs-library block_library.json   # NVIDIA's Llama-3.3-70B library
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from puzzle.io import read_json
from puzzle.search.nvlabs import nvlabs_tables
from puzzle.search.solve import Search
from puzzle.search.synthetic import synthetic_tables
from puzzle.search.targets import parse_target


def clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def since(t0: tuple[float, float]) -> str:
    wall, cpu = clock()
    return f"{wall - t0[0]:.3f} s wall, {cpu - t0[1]:.3f} s CPU"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=80)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--points", type=int, default=20, help="throughput targets in the sweep")
    p.add_argument("--solutions", type=int, default=2, help="diverse solutions per sweep point")
    p.add_argument("--diversity", type=float, default=0.1)
    p.add_argument(
        "--nvlabs-library", help="plan on NVlabs/puzzle's block_library.json (measurement_info.json beside it)"
    )
    args = p.parse_args()

    t0 = clock()
    if args.nvlabs_library:
        lib = read_json(args.nvlabs_library)
        scores, costs = nvlabs_tables(
            lib, read_json(args.nvlabs_library.replace("block_library.json", "measurement_info.json"))
        )
    else:
        scores, costs = synthetic_tables(args.layers, seed=args.seed, batches=(args.batch,))
    search = Search(scores, costs, kinds={"throughput", "memory"})
    batch, layers = search.batches[0], search.num_layers
    print(f"tables + instance: {len(scores)} compositions ({layers} layers x {len(scores) // layers}): {since(t0)}")

    t0 = clock()
    mip = search.mip(batch, "mip")
    print(
        f"MIP build (dominance, Pyomo model + LP twin, HiGHS instances): {since(t0)}; "
        f"{len(mip.kept)} of {len(scores)} options left after exact dominance"
    )

    memory = parse_target("memory", "0.7x")
    times = []
    for factor in (1.5, 2.0, 2.5, 3.0):
        rec = search.run({"throughput": parse_target("throughput", f"{factor}x"), "memory": memory})[0]
        times.append(rec["solver"]["solve_time_s"])
        print(
            f"  solve throughput >= {factor}x, memory <= 0.7x: {rec['solver']['solve_time_s']:.3f} s "
            f"({rec['solver']['status']}, sum KL {rec['objective']:.4f})"
        )
    print(f"single solves: median {statistics.median(times):.3f} s, max {max(times):.3f} s")

    points = [parse_target("throughput", f"{f:.3f}x") for f in np.linspace(1.2, 3.0, args.points)]
    for solutions in sorted({1, args.solutions}):
        t0 = clock()
        fresh = Search(scores, costs, kinds={"throughput", "memory"})  # its MIP build counts too
        results = fresh.sweep(
            "throughput", points, {"memory": memory}, num_solutions=solutions, diversity=args.diversity
        )
        elapsed = since(t0)
        solves = [r["solver"]["solve_time_s"] for recs in results if isinstance(recs, list) for r in recs]
        feasible = sum(isinstance(recs, list) for recs in results)
        what = (
            "1 solution"
            if solutions == 1
            else f"{solutions} solutions each differing in >= {args.diversity:.0%} of layers"
        )
        print(
            f"Pareto sweep, {args.points} throughput targets 1.2x..3.0x (memory <= 0.7x), {what}: {elapsed} "
            f"(build and verification included); {len(solves)} solves, median {statistics.median(solves):.3f} s, "
            f"max {max(solves):.3f} s; {feasible}/{args.points} points feasible"
        )


if __name__ == "__main__":
    main()
