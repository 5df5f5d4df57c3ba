//! Integration tests: the public HTTP API against a mock WeChat on loopback.

mod access;
mod access_log;
mod admin_api;
mod apps;
mod binding;
mod clients;
mod connections;
mod console;
mod controls;
mod deletion;
mod dev_mock;
mod docs;
mod events;
mod export;
mod faults;
mod helpers;
mod hostile;
mod input;
mod introspect;
mod keys;
mod login;
mod markdown;
mod me;
mod open_data;
#[path = "../support/postgres.rs"]
mod postgres;
mod process;
mod refresh;
mod replicas;
mod sessions;
mod setup;
mod spec;
mod startup;
mod tls;
mod webhooks;
mod wechat_errors;
