//! Tests of the real binary, by job: start-up rules, crash durability, key files, log
//! hygiene, the admin socket, file permissions and resource limits.

mod admin;
mod durability;
mod keys;
mod limits;
mod logs;
mod permissions;
mod startup;
