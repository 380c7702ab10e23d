//! Prometheus exporter (in progress).
