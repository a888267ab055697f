"""Experiment driver: `power-bert` with the whole-row target search (TargetController steps=True, reach=6)."""
import sys
from power_bert_ops.training import controller
controller.TargetController.__init__.__kwdefaults__["steps"] = True
controller.TargetController.__init__.__kwdefaults__["reach"] = 6.0
print("power-bert (experiment): whole-row search, reach 6", flush=True)
from power_bert_ops.cli import main
sys.exit(main(sys.argv[1:]))
