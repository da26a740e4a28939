//! The daemon's HTTP side: `http` (tiny_http, routing, admin auth),
//! `metrics` (the one Prometheus registry), `status` (health decisions,
//! the `/status` JSON and the status page), `charts` (its inline SVG), `html` (escaping).

pub mod charts;
pub mod html;
pub mod http;
pub mod metrics;
pub mod status;
