"""Measurement: parameters, FLOPs (fvcore plus the handles it lacks), throughput, latency, memory."""
from .flops import FlopReport, count_flops, count_params, flop_counter_mode_gflops
from .speed import measure_speed, measure_speed_sweep

__all__ = ["FlopReport", "count_flops", "count_params", "flop_counter_mode_gflops", "measure_speed",
           "measure_speed_sweep"]
