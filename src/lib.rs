//! grantd: a gRPC service that stores and enforces permission grants.
//!
//! A request travels through four rooms, each knowing only the next:
//!
//! - [`api`]: tonic handlers. They validate the protobuf request, turn it into a
//!   [`domain::commands`] value, call the service layer and turn the answer back into
//!   protobuf. [`domain::Error`] becomes a `tonic::Status` in exactly one place.
//! - [`service`]: the use-cases. Each write is one database transaction (retried on
//!   serialization conflicts) that also appends its change events, so a change and its
//!   audit record commit together or not at all.
//! - [`storage`]: sea-orm entities and set-based queries over SQLite or PostgreSQL. A
//!   batch of permissions costs a fixed number of statements, whatever its size.
//! - [`domain`]: validated identifiers, commands, the read models and the error type.
//!
//! [`server`] wires the services with health and reflection behind [`edge`] (request
//! ids, time limits, tonic's own refusals) and [`admission`], on [`connections`] that
//! cannot be held for free; [`auth`] turns bearer tokens
//! into callers; [`metrics`] serves Prometheus metrics; [`config`] reads flags and
//! environment variables for the `grantd` binary.

pub mod admission;
pub mod api;
pub mod auth;
pub mod cli;
pub mod config;
pub mod connections;
pub mod console;
pub mod domain;
pub mod edge;
pub mod metrics;
pub mod server;
pub mod service;
pub mod storage;
pub mod telemetry;
