cd /work/runs
(bash exp21.sh k4d30_4.5 4.5 --augment-copies 4 --augment-drop 0.3 & bash exp21.sh k4d30_6 6 --augment-copies 4 --augment-drop 0.3 & wait)
