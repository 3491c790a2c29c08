//! The `engines.emr` section: what it may say (spec types), how it is checked, and the validated
//! [`EmrSettings`] the EMR engine builds its requests from. Pure data: the aws crate owns the
//! calls. The section is checked in full only when a task runs on `emr`; otherwise only its keys
//! are, so variables that only EMR needs (roles, log URI) may stay unset for local runs.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The engine name tasks use to run on EMR.
pub(crate) const ENGINE: &str = "emr";

/// A validated instance group.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstanceGroup {
    /// `MASTER`, `CORE` or `TASK`, as EMR's API spells it.
    pub role: String,
    /// The EC2 instance type, e.g. `m5.xlarge`.
    pub instance_type: String,
    /// How many instances.
    pub count: u32,
    /// `ON_DEMAND` or `SPOT`.
    pub market: String,
    /// The most to pay for a spot instance, in USD, when bidding.
    pub bid_price: Option<String>,
    /// The group's name in EMR.
    pub name: String,
}

/// A validated instance fleet.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstanceFleet {
    /// `MASTER`, `CORE` or `TASK`, as EMR's API spells it.
    pub role: String,
    /// The instance types EMR may choose from.
    pub instance_types: Vec<String>,
    /// On-demand capacity units.
    pub on_demand: u32,
    /// Spot capacity units.
    pub spot: u32,
    /// The fleet's name in EMR.
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
/// A script EMR runs on every node before the cluster is ready.
pub struct BootstrapAction {
    /// Its name in EMR.
    pub name: String,
    /// The script's `s3://` URI.
    pub path: String,
    /// Its arguments.
    pub args: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
/// A configuration classification (`spark-defaults`, `spark-env`, ...) and its properties.
pub struct Configuration {
    /// The classification's name.
    pub classification: String,
    /// Its properties.
    pub properties: BTreeMap<String, String>,
}

/// How the EMR engine's clusters are made.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EmrSettings {
    /// The cluster's name; `None`: `dagrun <pipeline> <run-id>`.
    pub name: Option<String>,
    /// The EMR release, e.g. `emr-7.5.0`.
    pub release_label: String,
    /// The applications installed; Spark is always among them.
    pub applications: Vec<String>,
    /// The instance groups (or none, with fleets).
    pub instance_groups: Vec<InstanceGroup>,
    /// The instance fleets (or none, with groups).
    pub instance_fleets: Vec<InstanceFleet>,
    /// The role EMR itself assumes.
    pub service_role: String,
    /// The instance profile of the cluster's nodes (JobFlowRole).
    pub instance_profile: String,
    /// The `s3://` prefix EMR writes its logs under.
    pub log_uri: String,
    /// The subnet; `None`: the default VPC.
    pub subnet_id: Option<String>,
    /// An EMR security configuration's name.
    pub security_configuration: Option<String>,
    /// Scripts run on every node at start-up.
    pub bootstrap_actions: Vec<BootstrapAction>,
    /// The pipeline's own tags (dagrun adds its `dagrun:` ones).
    pub tags: BTreeMap<String, String>,
    /// Configuration classifications.
    pub configurations: Vec<Configuration>,
    #[serde(skip)]
    /// After this long without steps EMR terminates the cluster itself.
    pub idle_timeout: Duration,
    /// The `s3://` prefix for a run's step program, task specs and tables.
    pub staging: String,
    /// The EMR region; `None`: the AWS chain, then us-east-1.
    pub region: Option<String>,
    #[serde(skip)]
    /// The longest pause between two status polls.
    pub poll_interval: Duration,
    /// How many steps the cluster runs at once (RunJobFlow's `StepConcurrencyLevel`).
    pub step_concurrency: u32,
    #[serde(skip)]
    /// How long a failed run's staging folder is kept for debugging before a later run deletes it.
    pub keep_failed_staging: Duration,
    #[serde(skip)]
    /// Prices per instance type that replace dagrun's table (`engines.emr.prices`).
    pub prices: BTreeMap<String, InstancePrice>,
    #[serde(skip)]
    /// `engine: auto` goes to EMR when the local engine's planned time passes this.
    pub auto_max_local: Duration,
}

/// The default of `auto_max_local`.
pub const DEFAULT_AUTO_MAX_LOCAL: Duration = Duration::from_secs(3600);

/// The default retention of a failed run's staging folder.
pub(crate) const DEFAULT_KEEP_FAILED_STAGING: Duration = Duration::from_secs(7 * 86400);

/// The oldest EMR release whose Spark (3.5) runs dagrun's step program.
pub const MIN_RELEASE: (u32, u32) = (7, 0);

/// EMR's most steps at once on one cluster.
pub const MAX_STEP_CONCURRENCY: u32 = 256;

/// EMR's tag rules: a key of 1 to 128 characters, a value of up to 256, both of Unicode letters,
/// digits, spaces and `_ . : / = + - @`; at most 50 tags on a cluster.
pub mod tag_rules {
    /// The longest key.
    pub const MAX_KEY: usize = 128;
    /// The longest value.
    pub const MAX_VALUE: usize = 256;
    /// The most tags on one resource.
    pub const MAX_TAGS: usize = 50;

    /// The first character EMR would refuse, if any.
    pub fn refused_char(text: &str) -> Option<char> {
        text.chars().find(|c| !(c.is_alphanumeric() || c.is_whitespace() || "_.:/=+-@".contains(*c)))
    }

    /// Why `value` cannot be a tag value, if it cannot.
    pub fn value_problem(value: &str) -> Option<String> {
        if value.chars().count() > MAX_VALUE {
            return Some(format!("{} characters, EMR allows {MAX_VALUE}", value.chars().count()));
        }
        refused_char(value).map(|c| format!("`{c}` is not allowed (letters, digits, spaces and _ . : / = + - @ are)"))
    }
}

/// EMR's longest cluster and step names.
pub const MAX_NAME: usize = 256;

/// The value of the `dagrun:runs` tag: the runs folder's URI, or `sha256:` and the first 16 hex
/// digits of its SHA-256 when EMR's tag rules refuse the URI (too long, or a character they do not
/// allow). `dagrun emr gc --runs URI` matches a hashed tag to its folder.
pub fn runs_tag_value(runs_dir: &str) -> String {
    use sha2::{Digest, Sha256};
    if tag_rules::value_problem(runs_dir).is_none() {
        return runs_dir.to_string();
    }
    let digest = Sha256::digest(runs_dir.as_bytes());
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// The default longest pause between two status polls.
pub(crate) const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(10);

/// The default idle auto-termination: a safety net even if dagrun dies.
pub(crate) const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// The price of one instance-hour of an instance type, in USD.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct InstancePrice {
    /// EC2 on-demand.
    pub ec2: f64,
    /// The EMR uplift.
    pub emr: f64,
}

impl InstancePrice {
    /// Both together.
    pub fn total(&self) -> f64 {
        self.ec2 + self.emr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runs_uri_within_emrs_tag_rules_is_the_tag_and_any_other_is_hashed() {
        assert_eq!(runs_tag_value("s3://lake/sparkify/_dagrun"), "s3://lake/sparkify/_dagrun");
        let long = format!("s3://lake/{}/_dagrun", "x".repeat(300));
        let hashed = runs_tag_value(&long);
        assert!(hashed.starts_with("sha256:") && hashed.len() == "sha256:".len() + 16, "{hashed}");
        assert_eq!(hashed, runs_tag_value(&long), "stable");
        assert!(runs_tag_value("s3://lake/a~b").starts_with("sha256:"), "`~` is outside the tag rules");
        assert!(tag_rules::value_problem(&hashed).is_none());
    }
}
