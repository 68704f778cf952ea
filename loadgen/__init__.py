"""holistream-loadgen: paced video clients that measure per-frame latency, drops and fairness."""
