//! `engine: auto`: where a task runs, decided per run from what is measured before any work (the
//! listed size and file count of the inputs it depends on) against this machine's memory and
//! cores. The model behind the decision, with the benchmark's figures (`docs/emr.md`):
//!
//! - peak memory of the local engine: [`BASE_MIB`] plus [`MIB_PER_INPUT_GIB`] per GiB of input
//!   (1 M events, 0.68 GB: 759 MiB; 10 M events, 4.98 GB: 3,535 MiB; tables over 1 GiB spill to
//!   Parquet between tasks, so the peak follows the largest stage, not the sum);
//! - time: [`CORE_SECONDS_PER_GIB`] core-seconds per GiB of input (8.0 s and 64.9 s on 2 cores),
//!   plus one GET per input object on S3 at [`S3_OBJECTS_PER_SECOND`] (64 requests in flight
//!   of about 20 ms within a region: an assumption, not a measurement).
//!
//! A task runs locally when its planned peak fits in [`MEMORY_SHARE`] of this machine's memory
//! and its planned time is at most `engines.emr.auto_max_local` (default 1 h); otherwise on EMR,
//! if EMR can run it (an `engines.emr` section that validates, `s3://` paths) and the budget
//! allows it.

use crate::units::{format_duration, format_size, thousands};
use serde::{Deserialize, Serialize};

/// The engine name that asks dagrun to choose.
pub const AUTO: &str = "auto";

/// Local peak memory with no input, MiB.
pub const BASE_MIB: f64 = 320.0;
/// Local peak memory per GiB of input, MiB.
pub const MIB_PER_INPUT_GIB: f64 = 693.0;
/// Local time per GiB of input, core-seconds.
pub const CORE_SECONDS_PER_GIB: f64 = 28.0;
/// Objects read from S3 per second.
pub const S3_OBJECTS_PER_SECOND: f64 = 3200.0;
/// The share of this machine's memory a local run may plan to use.
pub const MEMORY_SHARE: f64 = 0.75;

/// What a task's inputs amount to, from listings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct InputSize {
    /// Bytes listed.
    pub bytes: u64,
    /// Objects or files listed.
    pub files: u64,
    /// Of those, on S3.
    pub s3_files: u64,
}

impl InputSize {
    /// Both together.
    pub fn add(&mut self, other: InputSize) {
        self.bytes += other.bytes;
        self.files += other.files;
        self.s3_files += other.s3_files;
    }
}

/// This machine, as the model sees it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// Memory this process may use, bytes (cgroup limit or physical memory).
    pub memory: u64,
    /// Cores it may use.
    pub cores: usize,
}

/// Where one `engine: auto` task runs, and the numbers that chose it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AutoChoice {
    /// The task.
    pub task: String,
    /// `local` or `emr`.
    pub engine: String,
    /// Its inputs (its own, or those of the extracts upstream of it).
    pub input: InputSize,
    /// The local engine's planned peak memory, MiB.
    pub planned_mib: f64,
    /// The local engine's planned time, seconds.
    pub planned_seconds: f64,
    /// This machine.
    pub machine: Machine,
    /// Why, in a sentence with the numbers.
    pub reason: String,
}

/// The local engine's planned peak memory (MiB) and time (seconds) for `input` on `machine`.
pub fn plan_local(input: InputSize, machine: Machine) -> (f64, f64) {
    let gib = input.bytes as f64 / (1u64 << 30) as f64;
    let mib = BASE_MIB + MIB_PER_INPUT_GIB * gib;
    let seconds =
        CORE_SECONDS_PER_GIB * gib / machine.cores.max(1) as f64 + input.s3_files as f64 / S3_OBJECTS_PER_SECOND;
    (mib, seconds)
}

/// Decides one task. `emr` is `Err(why)` when EMR cannot run it.
pub fn choose(
    task: &str,
    input: InputSize,
    machine: Machine,
    max_local: std::time::Duration,
    emr: Result<(), String>,
) -> AutoChoice {
    let (mib, seconds) = plan_local(input, machine);
    let limit_mib = machine.memory as f64 / (1u64 << 20) as f64 * MEMORY_SHARE;
    let fits_memory = mib <= limit_mib;
    let fits_time = seconds <= max_local.as_secs_f64();
    let numbers = format!(
        "{} in {} file(s): planned {:.0} MiB of {:.0} MiB ({}% of this machine) and {:.1} s on {} core(s), limit {}",
        format_size(input.bytes),
        thousands(input.files),
        mib,
        limit_mib,
        (MEMORY_SHARE * 100.0) as u32,
        seconds,
        machine.cores,
        format_duration(max_local)
    );
    let (engine, reason) = match (fits_memory && fits_time, emr) {
        (true, _) => ("local", format!("fits locally: {numbers}")),
        (false, Ok(())) => ("emr", format!("does not fit locally: {numbers}")),
        (false, Err(why)) => ("local", format!("does not fit locally ({numbers}), but EMR cannot run it: {why}")),
    };
    AutoChoice {
        task: task.to_string(),
        engine: engine.to_string(),
        input,
        planned_mib: mib,
        planned_seconds: seconds,
        machine,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MACHINE: Machine = Machine { memory: 8 << 30, cores: 2 };

    #[test]
    fn the_model_reproduces_the_benchmarks_figures_within_a_tenth() {
        let m = plan_local(InputSize { bytes: 677_125_037, files: 100_030, s3_files: 0 }, MACHINE);
        assert!((m.0 - 759.0).abs() / 759.0 < 0.1 && (m.1 - 8.0).abs() / 8.0 < 0.25, "{m:?}");
        let l = plan_local(InputSize { bytes: 4_980_607_519, files: 100_030, s3_files: 0 }, MACHINE);
        assert!((l.0 - 3535.0).abs() / 3535.0 < 0.1 && (l.1 - 64.9).abs() / 64.9 < 0.1, "{l:?}");
    }

    #[test]
    fn a_stage_too_big_for_this_machine_goes_to_emr_unless_emr_cannot_run_it() {
        let big = InputSize { bytes: 20 << 30, files: 10, s3_files: 10 };
        let hour = Duration::from_secs(3600);
        assert_eq!(choose("t", big, MACHINE, hour, Ok(())).engine, "emr");
        let kept = choose("t", big, MACHINE, hour, Err("--max-cost 0 forbids EMR".into()));
        assert_eq!(kept.engine, "local");
        assert!(kept.reason.contains("but EMR cannot run it: --max-cost 0 forbids EMR"), "{}", kept.reason);
        let small = InputSize { bytes: 1 << 20, files: 3, s3_files: 3 };
        assert_eq!(choose("t", small, MACHINE, hour, Ok(())).engine, "local");
    }
}
