//! The `engines.emr` section: what it may say (spec types), how it is checked, and the validated
//! [`EmrSettings`] the EMR engine builds its requests from. Pure data: the aws crate owns the
//! calls. The section is checked in full only when a task runs on `emr`; otherwise only its keys
//! are, so variables that only EMR needs (roles, log URI) may stay unset for local runs.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

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
}

/// The default longest pause between two status polls.
pub(crate) const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(10);

/// The default idle auto-termination: a safety net even if dagrun dies.
pub(crate) const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
