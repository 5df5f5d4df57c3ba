//! wxauth logs WeChat mini-program users in and issues signed JWTs.
//!
//! A mini-program sends the one-time `code` from `wx.login`; [`wechat`] exchanges it with
//! WeChat's `auth.code2Session`, [`store`] binds the openid to a stable user id in sled,
//! and [`token`] signs a short-lived JWT that other services verify offline through the
//! JWKS endpoint. [`auth`] ties the three together; [`api`] is the thin HTTP layer over it.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod admin;
pub mod api;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod devmock;
pub mod dirs;
pub mod domain;
pub mod keyfile;
pub mod limits;
pub mod metrics;
pub mod opendata;
pub mod password;
pub mod server;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod token;
pub mod webhooks;
pub mod wechat;
