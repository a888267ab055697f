"""Experiment (issue 21): the search's travel of r scaled with the target, travel = 2 x max(1, X / 3)
(the default is 2 at every target); everything else the CLI's. Usage: python travel.py <cli args>"""
import sys

import power_bert_ops.training.stages as st
from power_bert_ops.training.controller import TargetController


class ScaledTravel(TargetController):
    def __init__(self, target, *args, **kwargs):
        kwargs.setdefault("travel", 2.0 * max(1.0, float(target) / 3.0))
        super().__init__(target, *args, **kwargs)


st.TargetController = ScaledTravel
from power_bert_ops import cli  # noqa: E402

sys.exit(cli.main(sys.argv[1:]))
