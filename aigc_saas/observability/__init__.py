"""Operating the platform: health probes, Prometheus metrics and job-aware logs."""
