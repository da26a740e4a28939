//! The daemon's HTTP side: `http` (tiny_http, routing), `control` (what an
//! admin endpoint asks of the run loop), `auth` (the admin
//! token, basic auth against bcrypt hashes),
//! `metrics` (the one Prometheus registry), `status` (health decisions,
//! the `/status` JSON), `page` (the status page), `charts` (its inline SVG), `html` (escaping).

pub mod auth;
pub mod charts;
pub mod control;
pub mod html;
pub mod http;
pub mod metrics;
pub mod page;
pub mod status;
