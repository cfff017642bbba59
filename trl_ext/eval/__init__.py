"""Evaluation: scoring, Beta intervals, dominance, Pareto frontier, reports."""
