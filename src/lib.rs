//! Pylon: an API gateway on Pingora whose upstream traffic can be mutually authenticated.
//!
//! Config flows one way: a source (the resources file, the admin API, or [`etcd`]) →
//! [`config`] (parse, validate with field paths, compile) → an immutable [`table::Table`]
//! behind an atomic pointer → [`proxy::Gateway`], which serves every request from the table
//! it loaded at the start of that request.
#![deny(clippy::unwrap_used)]
#![cfg_attr(test, allow(clippy::unwrap_used))]
#![warn(missing_docs)]

pub mod admin;
pub mod certs;
pub mod config;
pub mod diagnose;
pub mod etcd;
pub mod forwarding;
pub mod grpc;
pub mod ops;
pub mod plugin;
pub mod proxy;
pub mod router;
pub mod table;
pub mod tls;
pub mod upstream;
