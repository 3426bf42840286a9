"""Evaluation: user splits (``splits.py``), and the metrics and harness that compare P2P with
its baselines. Reads the other stages; nothing in the personalization path imports it.
"""
