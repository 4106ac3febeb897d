"""Evaluation: IFEval with the official checks, judge accuracy, inference-time scaling."""
