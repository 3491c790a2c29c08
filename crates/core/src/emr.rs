//! The `engines.emr` section: what it may say (spec types), how it is checked, and the validated
//! [`EmrSettings`] the EMR engine builds its requests from. Pure data: the aws crate owns the
//! calls. The section is checked in full only when a task runs on `emr`; otherwise only its keys
//! are, so variables that only EMR needs (roles, log URI) may stay unset for local runs.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

/// The engine name tasks use to run on EMR.
pub const ENGINE: &str = "emr";

/// A validated instance group.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstanceGroup {
    pub role: String,
    pub instance_type: String,
    pub count: u32,
    pub market: String,
    pub bid_price: Option<String>,
    pub name: String,
}

/// A validated instance fleet.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstanceFleet {
    pub role: String,
    pub instance_types: Vec<String>,
    pub on_demand: u32,
    pub spot: u32,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BootstrapAction {
    pub name: String,
    pub path: String,
    pub args: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Configuration {
    pub classification: String,
    pub properties: BTreeMap<String, String>,
}

/// How the EMR engine's clusters are made.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EmrSettings {
    pub name: Option<String>,
    pub release_label: String,
    pub applications: Vec<String>,
    pub instance_groups: Vec<InstanceGroup>,
    pub instance_fleets: Vec<InstanceFleet>,
    pub service_role: String,
    pub instance_profile: String,
    pub log_uri: String,
    pub subnet_id: Option<String>,
    pub security_configuration: Option<String>,
    pub bootstrap_actions: Vec<BootstrapAction>,
    pub tags: BTreeMap<String, String>,
    pub configurations: Vec<Configuration>,
    #[serde(skip)]
    pub idle_timeout: Duration,
    pub staging: String,
    pub region: Option<String>,
    #[serde(skip)]
    pub poll_interval: Duration,
}

/// The default longest pause between two status polls.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(10);

/// The default idle auto-termination: a safety net even if dagrun dies.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
