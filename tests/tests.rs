//! Integration tests of the `dagrun` binary: every test drives the real executable.

mod support;

mod bad_input;
mod cli;
mod publish;
mod records;
mod resume;
mod s3;
mod signals;
mod sparkify;
mod workflows;
