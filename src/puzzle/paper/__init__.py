"""The paper's tables and figures at this project's scale.

plan     which children, inputs and `puzzle report` arguments each artifact needs (the
         workflow's rules/paper.smk loops over it; no pandas, no torch)
child    one searched child: its solution.json and eval JSONs
numbers  the paper's numbers that the tables and figures put beside ours (numbers.yaml)
tables   one builder per table, and writing a table as CSV + Markdown
figures  one function per figure (PNG), with the frontier and per-layer runtime they plot
report   `python -m puzzle report <artifact>`: one subcommand per artifact, with the flags it reads
"""
