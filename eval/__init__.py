"""Evaluation: the synthetic world with a knowledge cutoff, its question sets, and the checks on them.

    python -m eval world --seed 0 --size tiny --out data/world
    python -m eval contamination --questions data/world/questions --corpus data/world/sft

Later issues add the harness (`python -m eval run`) and run comparison (`python -m eval compare`).
`eval` may import `core`, `indexer` and `service`; nothing imports `eval`.
"""
