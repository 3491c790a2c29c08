//! Integration tests of the `dagrun` binary: every test drives the real executable.

mod support;

mod bad_input;
mod cli;
mod delta;
mod docs;
mod emr;
mod fencing;
mod iam;
mod incremental;
mod layers;
mod publish;
mod records;
mod resume;
mod s3;
mod safety;
mod secrets;
mod signals;
mod spark;
mod sparkify;
mod tiny_files;
mod workflows;
