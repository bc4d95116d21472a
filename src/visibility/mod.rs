//! Visibility: flow records (JSON lines, IPFIX, live follow) and Prometheus metrics.

pub mod export;
pub mod ipfix;
pub mod metrics;
pub mod record;
