//! What an EMR cluster costs: the price table shipped with dagrun (EC2 on-demand plus the EMR
//! uplift, per instance-hour), a pipeline's overrides (`engines.emr.prices`), the hourly price of
//! a cluster's instance groups or fleets, and what a run spent ([`ClusterCost`], kept in the run
//! record, which the next dry run's estimate reads). Pure data: the aws crate measures, this prices.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::emr::{EmrSettings, InstancePrice};
use crate::units::format_duration;

/// When the shipped table's prices were taken (list prices, on-demand, Linux).
pub const PRICES_AS_OF: &str = "2026-12";

/// Per family: the `xlarge` size's EC2 and EMR prices in us-east-1, us-east-2 and us-west-2
/// (which price these families alike), and in eu-west-1. Other sizes scale with their vCPUs; the
/// EMR uplift is capped at 0.27 USD/h, as AWS caps it.
const FAMILIES: &[(&str, [f64; 2], [f64; 2])] = &[
    // family, [ec2, emr] us, [ec2, emr] eu-west-1
    ("m5", [0.192, 0.048], [0.214, 0.048]),
    ("m6i", [0.192, 0.048], [0.214, 0.048]),
    ("m7g", [0.1632, 0.0408], [0.1786, 0.0408]),
    ("r5", [0.252, 0.063], [0.282, 0.063]),
    ("r6i", [0.252, 0.063], [0.282, 0.063]),
    ("c5", [0.17, 0.0425], [0.192, 0.0425]),
    ("c6i", [0.17, 0.0425], [0.192, 0.0425]),
];

const SIZES: &[(&str, f64)] = &[
    ("large", 0.5),
    ("xlarge", 1.0),
    ("2xlarge", 2.0),
    ("4xlarge", 4.0),
    ("8xlarge", 8.0),
    ("12xlarge", 12.0),
    ("16xlarge", 16.0),
    ("24xlarge", 24.0),
];

const US_REGIONS: &[&str] = &["us-east-1", "us-east-2", "us-west-2"];
const EU_REGIONS: &[&str] = &["eu-west-1"];
const EMR_UPLIFT_CAP: f64 = 0.27;

/// The regions the shipped table covers.
pub fn table_regions() -> Vec<&'static str> {
    US_REGIONS.iter().chain(EU_REGIONS).copied().collect()
}

/// The shipped price of `instance_type` in `region`, if the table has it.
pub fn table_price(instance_type: &str, region: &str) -> Option<InstancePrice> {
    let (family, size) = instance_type.split_once('.')?;
    let (_, us, eu) = FAMILIES.iter().find(|(f, _, _)| *f == family)?;
    let (_, factor) = SIZES.iter().find(|(s, _)| *s == size)?;
    let base = if US_REGIONS.contains(&region) {
        us
    } else if EU_REGIONS.contains(&region) {
        eu
    } else {
        return None;
    };
    Some(InstancePrice { ec2: base[0] * factor, emr: (base[1] * factor).min(EMR_UPLIFT_CAP) })
}

/// One line of a cluster's price: instances of one type in one group or fleet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriceLine {
    /// The group or fleet (`MASTER`, `CORE`, `TASK`).
    pub role: String,
    /// How many instances (a fleet's capacity units, each taken as one instance).
    pub count: u32,
    /// The instance type priced (a fleet's dearest).
    pub instance_type: String,
    /// Its price per instance-hour.
    pub price: InstancePrice,
    /// Spot capacity, priced at on-demand as an upper bound.
    pub spot: bool,
    /// Where the price comes from: `table` or `pipeline`.
    pub source: String,
}

/// What a cluster costs per hour of wall time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterPrice {
    /// The region priced.
    pub region: String,
    /// Per group or fleet.
    pub lines: Vec<PriceLine>,
    /// Instance types neither the table nor the pipeline prices.
    pub unpriced: Vec<String>,
}

impl ClusterPrice {
    /// Instance-hours per hour of wall time.
    pub fn instances(&self) -> u32 {
        self.lines.iter().map(|l| l.count).sum()
    }

    /// USD per hour of wall time (unpriced types count as nothing: see [`Self::unpriced`]).
    pub fn usd_per_hour(&self) -> f64 {
        self.lines.iter().map(|l| f64::from(l.count) * l.price.total()).sum()
    }

    /// Whether every instance type is priced.
    pub fn complete(&self) -> bool {
        self.unpriced.is_empty()
    }

    /// One line per group or fleet, and the total.
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        for l in &self.lines {
            out.push(format!(
                "{} {} x {}: ${:.3}/h each (EC2 ${:.3} + EMR ${:.3}{}{})",
                l.role,
                l.count,
                l.instance_type,
                l.price.total(),
                l.price.ec2,
                l.price.emr,
                match l.source.as_str() {
                    "pipeline" => ", engines.emr.prices",
                    "price list" => ", AWS Price List API",
                    _ => "",
                },
                if l.spot { "; spot, priced at on-demand as an upper bound" } else { "" }
            ));
        }
        let prices = if self.lines.iter().any(|l| l.source == "table") {
            format!("dagrun's price table of {PRICES_AS_OF}")
        } else if self.lines.iter().any(|l| l.source == "price list") {
            "the AWS Price List API".to_string()
        } else {
            "engines.emr.prices".to_string()
        };
        out.push(format!(
            "{} instance-hours per hour, ${:.3}/h in {} ({prices})",
            self.instances(),
            self.usd_per_hour(),
            self.region
        ));
        if !self.unpriced.is_empty() {
            out.push(format!(
                "no price for {} in {}: add it under engines.emr.prices (USD per instance-hour: {{ec2: .., emr: ..}})",
                self.unpriced.join(", "),
                self.region
            ));
        }
        out
    }
}

/// The hourly price of the cluster `settings` describe, in `region`: each type's price from the
/// pipeline (`engines.emr.prices`), else from the Price List API (`refreshed`), else the table.
pub fn cluster_price(
    settings: &EmrSettings,
    region: &str,
    refreshed: &BTreeMap<String, InstancePrice>,
) -> ClusterPrice {
    let price_of = |t: &str| -> Option<(InstancePrice, &'static str)> {
        settings
            .prices
            .get(t)
            .map(|p| (*p, "pipeline"))
            .or_else(|| refreshed.get(t).map(|p| (*p, "price list")))
            .or_else(|| table_price(t, region).map(|p| (p, "table")))
    };
    let mut lines = Vec::new();
    let mut unpriced = Vec::new();
    for g in &settings.instance_groups {
        match price_of(&g.instance_type) {
            Some((price, source)) => lines.push(PriceLine {
                role: g.role.clone(),
                count: g.count,
                instance_type: g.instance_type.clone(),
                price,
                spot: g.market == "SPOT",
                source: source.into(),
            }),
            None => unpriced.push(g.instance_type.clone()),
        }
    }
    for f in &settings.instance_fleets {
        let priced: Vec<(String, InstancePrice, &str)> =
            f.instance_types.iter().filter_map(|t| price_of(t).map(|(p, s)| (t.clone(), p, s))).collect();
        unpriced.extend(f.instance_types.iter().filter(|t| price_of(t).is_none()).cloned());
        if let Some((t, price, source)) =
            priced.into_iter().max_by(|a, b| a.1.total().partial_cmp(&b.1.total()).unwrap_or(std::cmp::Ordering::Equal))
        {
            lines.push(PriceLine {
                role: f.role.clone(),
                count: f.on_demand + f.spot,
                instance_type: t,
                price,
                spot: f.spot > 0,
                source: source.into(),
            });
        }
    }
    unpriced.sort();
    unpriced.dedup();
    ClusterPrice { region: region.to_string(), lines, unpriced }
}

/// What one cluster of a run cost, measured by the EMR engine and kept in the run record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterCost {
    /// The cluster's id.
    pub cluster: String,
    /// DescribeCluster's `NormalizedInstanceHours` once terminated (EMR rounds each instance up
    /// to whole hours), when it could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalized_instance_hours: Option<i64>,
    /// From the request to the termination request, in seconds.
    pub wall_seconds: f64,
    /// From the request until it was ready for steps.
    pub startup_seconds: f64,
    /// While at least one step ran.
    pub steps_seconds: f64,
    /// Ready, with no step running.
    pub idle_seconds: f64,
    /// USD per hour of wall time at the prices used.
    pub usd_per_hour: f64,
    /// What the wall time cost at those prices.
    pub usd: f64,
    /// Each EMR task's share, by its steps' running time.
    pub tasks: BTreeMap<String, f64>,
    /// The price table's date, or `engines.emr.prices`.
    pub prices: String,
    /// Why the cluster was stopped early, when the budget stopped it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
}

impl ClusterCost {
    /// One line for the summary.
    pub fn describe(&self) -> String {
        let hours =
            self.normalized_instance_hours.map(|h| format!("{h} normalized instance-hours, ")).unwrap_or_default();
        format!(
            "cluster {}: {hours}{} of wall time (start-up {}, steps {}, idle {}), ${:.2} at ${:.3}/h ({})",
            self.cluster,
            format_duration(std::time::Duration::from_secs_f64(self.wall_seconds)),
            format_duration(std::time::Duration::from_secs_f64(self.startup_seconds)),
            format_duration(std::time::Duration::from_secs_f64(self.steps_seconds)),
            format_duration(std::time::Duration::from_secs_f64(self.idle_seconds)),
            self.usd,
            self.usd_per_hour,
            self.prices
        )
    }
}

/// The instance types a cluster's groups and fleets name, once each.
pub fn instance_types(settings: &EmrSettings) -> Vec<String> {
    let mut types: Vec<String> = settings
        .instance_groups
        .iter()
        .map(|g| g.instance_type.clone())
        .chain(settings.instance_fleets.iter().flat_map(|f| f.instance_types.iter().cloned()))
        .collect();
    types.sort();
    types.dedup();
    types
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_scale_the_xlarge_price_and_the_emr_uplift_is_capped() {
        let x = table_price("m5.xlarge", "us-east-1").unwrap();
        assert_eq!(x, InstancePrice { ec2: 0.192, emr: 0.048 });
        let big = table_price("m5.24xlarge", "us-west-2").unwrap();
        assert!((big.ec2 - 4.608).abs() < 1e-9 && big.emr == 0.27, "{big:?}");
        assert!(table_price("m5.xlarge", "ap-south-1").is_none());
        assert!(table_price("x1e.xlarge", "us-east-1").is_none());
    }
}
