"""The search: from score and cost tables to a verified `solution.json`, with no torch.

Data flows one way through the modules:

    tables     read scores.csv / costs.csv, checked complete and plausible     (nvlabs: NVlabs/puzzle's
    targets    budgets: 2x, 5000 tok/s, 80GiB, 250ms                            block library as tables;
    instance   one (scenario, batch): options, costs, targets -> bounds         synthetic: tables for
    mip        the program (Pyomo + HiGHS) and the check of written solutions   tests and benchmarks)
    baselines  the paper's ablation searches on the same instance
    solve      every batch, several solutions, sweeps, infeasibility explained
    cli        `python -m puzzle search`
"""
