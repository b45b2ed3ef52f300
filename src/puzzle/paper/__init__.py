"""The paper's tables and figures at this project's scale.

plan     which children, inputs and `puzzle report` arguments each artifact needs (the
         workflow's rules/paper.smk loops over it; no pandas, no torch)
report   `python -m puzzle report <artifact>`: the tables and figures from those files
"""
