"""What only the benchmarks and the command line use of the engine: capped training children
(``hardcap``, ``train_child``), the checkpointing benchmark and showcase, the memory model's
sampling check and the process calibration."""
