//! The `engines.emr` section's rules: required fields, ranges, enum values and their places, and
//! the [`EmrSettings`] they become. Checked in full only when a task runs on `emr`; otherwise only
//! its keys are, so variables that only EMR needs (roles, log URI) may stay unset for local runs.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::auto::AUTO;
use crate::decode::{Decode, Decoder, Located};
use crate::diagnostic::{Diagnostic, Pos};
use crate::emr::{
    BootstrapAction, Configuration, DEFAULT_IDLE_TIMEOUT, DEFAULT_KEEP_FAILED_STAGING, DEFAULT_POLL_INTERVAL,
    EmrSettings, InstanceFleet, InstanceGroup, MAX_NAME, MAX_STEP_CONCURRENCY, MIN_RELEASE, tag_rules,
};
use crate::emr::{DEFAULT_AUTO_MAX_LOCAL, ENGINE, InstancePrice};
use crate::plan::Plan;
use crate::spec::{EmrSpec, EnginesSpec, InstanceRole, Market};
use crate::yaml::Node;

fn text(v: &Option<Located<String>>) -> Option<String> {
    v.as_ref().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// `emr-7.5.0` as (7, 5); `None` if it does not look like a release label.
fn release(label: &str) -> Option<(u32, u32)> {
    let mut parts = label.strip_prefix("emr-")?.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The longest step name a run of this plan can give EMR: `dagrun:<pipeline>:<run>:<task>:<attempt>`
/// with a 64-character run id and a 3-digit attempt.
fn longest_step_name(plan: &Plan) -> (usize, String) {
    plan.tasks
        .iter()
        .filter(|t| t.engine == ENGINE || t.engine == AUTO)
        .map(|t| ("dagrun::".len() + plan.name.chars().count() + 1 + 64 + 1 + t.id.chars().count() + 4, t.id.clone()))
        .max()
        .unwrap_or_default()
}

/// Checks a decoded `engines.emr` section against EMR's own limits (release, names, tags) and
/// fills in defaults. Every problem is pushed, so `validate` catches what RunJobFlow would refuse.
pub(super) fn validate(spec: &EmrSpec, plan: &Plan, diags: &mut Vec<Diagnostic>) -> EmrSettings {
    let mut err = |pos: Pos, message: String| diags.push(Diagnostic::error(pos, message));
    match release(&spec.release_label) {
        None => err(
            spec.release_label.pos,
            format!("release_label `{}` should look like emr-7.5.0", spec.release_label.value),
        ),
        Some(found) if found < MIN_RELEASE => err(
            spec.release_label.pos,
            format!(
                "release_label `{}` is too old: dagrun's step program needs Spark 3.5, in emr-{}.{}.0 and later",
                spec.release_label.value, MIN_RELEASE.0, MIN_RELEASE.1
            ),
        ),
        Some(_) => {}
    }
    // The pipeline's name goes into the `dagrun:pipeline` tag, the default cluster name and every
    // step's name: EMR refuses them at RunJobFlow, after staging writes, unless they are checked here.
    if let Some(problem) = tag_rules::value_problem(&plan.name) {
        err(spec.pos, format!("the pipeline name `{}` cannot be EMR's `dagrun:pipeline` tag: {problem}", plan.name));
    }
    let (longest, task) = longest_step_name(plan);
    if longest > MAX_NAME {
        err(
            spec.pos,
            format!(
                "the step names of task `{task}` (`dagrun:<pipeline>:<run id>:{task}:<attempt>`) can reach {longest} characters; EMR allows {MAX_NAME}: shorten the pipeline name or the task id"
            ),
        );
    }
    if let Some(name) = &spec.name {
        let length = name.chars().count();
        if length > MAX_NAME {
            err(name.pos, format!("the cluster name has {length} characters; EMR allows {MAX_NAME}"));
        }
    } else if "dagrun ".len() + plan.name.chars().count() + 1 + 64 > MAX_NAME {
        err(
            spec.pos,
            format!(
                "the default cluster name `dagrun <pipeline> <run id>` can exceed EMR's {MAX_NAME} characters: set engines.emr.name"
            ),
        );
    }
    let step_concurrency = match &spec.step_concurrency {
        Some(n) => {
            if n.value == 0 || n.value > MAX_STEP_CONCURRENCY {
                err(n.pos, format!("step_concurrency must be between 1 and {MAX_STEP_CONCURRENCY}, found {}", n.value));
            }
            n.value.clamp(1, MAX_STEP_CONCURRENCY)
        }
        None => (plan.tasks.iter().filter(|t| t.engine == ENGINE).count() as u32).clamp(1, MAX_STEP_CONCURRENCY),
    };
    let keep_failed_staging = spec.keep_failed_staging.as_ref().map_or(DEFAULT_KEEP_FAILED_STAGING, |d| d.value.0);
    let mut prices = BTreeMap::new();
    for (key, price) in spec.prices.iter().flat_map(|p| p.0.iter()) {
        for v in [&price.ec2, &price.emr] {
            if !v.value.is_finite() || v.value < 0.0 {
                err(v.pos, format!("the price of {} must be a number of USD per instance-hour, at least 0", key.name));
            }
        }
        prices.insert(key.name.clone(), InstancePrice { ec2: price.ec2.value, emr: price.emr.value });
    }
    let applications: Vec<String> = match &spec.applications {
        Some(apps) => apps.iter().map(|a| a.value.clone()).collect(),
        None => vec!["Spark".into()],
    };
    if !applications.iter().any(|a| a.eq_ignore_ascii_case("spark")) {
        let pos = spec.applications.as_ref().and_then(|a| a.first()).map_or(spec.pos, |a| a.pos);
        err(pos, "applications must include Spark: dagrun's steps are Spark programs".into());
    }
    for (key, value) in [("service_role", &spec.service_role), ("instance_profile", &spec.instance_profile)] {
        if value.trim().is_empty() {
            err(value.pos, format!("{key} is empty"));
        }
    }
    for (key, value) in [("log_uri", &spec.log_uri), ("staging", &spec.staging)] {
        if !value.starts_with("s3://") || value.trim_start_matches("s3://").is_empty() {
            err(value.pos, format!("{key} must be an s3://bucket/prefix URI, found `{}`", value.value));
        }
    }
    let idle_timeout = match &spec.idle_timeout {
        Some(t) => {
            if t.value.0 < Duration::from_secs(60) || t.value.0 > Duration::from_secs(7 * 86400) {
                err(t.pos, "idle_timeout must be between 1m and 7d (EMR's limits)".into());
            }
            t.value.0
        }
        None => DEFAULT_IDLE_TIMEOUT,
    };
    let poll_interval = match &spec.poll_interval {
        Some(t) => {
            if t.value.0.is_zero() || t.value.0 > Duration::from_secs(600) {
                err(t.pos, "poll_interval must be between 1ms and 10m".into());
            }
            t.value.0.max(Duration::from_millis(1))
        }
        None => DEFAULT_POLL_INTERVAL,
    };

    let mut instance_groups = Vec::new();
    let mut instance_fleets = Vec::new();
    match (&spec.instance_groups, &spec.instance_fleets) {
        (Some(_), Some(f)) => {
            err(f.first().map_or(spec.pos, |f| f.pos), "use instance_groups or instance_fleets, not both".into())
        }
        (None, None) => err(spec.pos, "EMR settings need instance_groups or instance_fleets".into()),
        (Some(groups), None) => {
            for g in groups {
                let market = g.market.as_ref().map_or(Market::OnDemand, |m| m.value);
                if g.count.value == 0 {
                    err(g.count.pos, "count must be at least 1".into());
                }
                if g.role.value == InstanceRole::Master && g.count.value != 1 {
                    err(g.count.pos, format!("the master group has exactly 1 instance, found {}", g.count.value));
                }
                if let Some(bid) = &g.bid_price {
                    if market != Market::Spot {
                        err(bid.pos, "bid_price needs `market: spot`".into());
                    } else if bid.parse::<f64>().is_err() {
                        err(bid.pos, format!("bid_price `{}` is not a price in USD", bid.value));
                    }
                }
                if g.instance_type.trim().is_empty() {
                    err(g.instance_type.pos, "instance_type is empty".into());
                }
                instance_groups.push(InstanceGroup {
                    role: g.role.value.api().into(),
                    instance_type: g.instance_type.value.clone(),
                    count: g.count.value,
                    market: market.api().into(),
                    bid_price: g.bid_price.as_ref().map(|b| b.value.clone()),
                    name: g.name.as_ref().map_or_else(|| g.role.value.as_str().to_string(), |n| n.value.clone()),
                });
            }
            let masters = groups.iter().filter(|g| g.role.value == InstanceRole::Master).count();
            if masters != 1 {
                err(
                    groups.first().map_or(spec.pos, |g| g.pos),
                    format!("instance_groups need exactly one master group, found {masters}"),
                );
            }
        }
        (None, Some(fleets)) => {
            for f in fleets {
                let on_demand = f.on_demand.as_ref().map_or(0, |v| v.value);
                let spot = f.spot.as_ref().map_or(0, |v| v.value);
                if on_demand + spot == 0 {
                    err(f.pos, "a fleet needs on_demand or spot capacity".into());
                }
                if f.instance_types.is_empty() {
                    err(f.pos, "a fleet needs at least one instance type".into());
                }
                instance_fleets.push(InstanceFleet {
                    role: f.role.value.api().into(),
                    instance_types: f.instance_types.iter().map(|t| t.value.clone()).collect(),
                    on_demand,
                    spot,
                    name: f.name.as_ref().map_or_else(|| f.role.value.as_str().to_string(), |n| n.value.clone()),
                });
            }
            let masters = fleets.iter().filter(|f| f.role.value == InstanceRole::Master).count();
            if masters != 1 {
                err(
                    fleets.first().map_or(spec.pos, |f| f.pos),
                    format!("instance_fleets need exactly one master fleet, found {masters}"),
                );
            }
        }
    }
    let tags: BTreeMap<String, String> = spec
        .tags
        .as_ref()
        .map(|t| t.0.iter().map(|(k, v)| (k.name.clone(), v.value.clone())).collect())
        .unwrap_or_default();
    for (key, value) in spec.tags.iter().flat_map(|t| t.0.iter()) {
        if key.name.starts_with("dagrun:") {
            err(key.pos, format!("tag `{}`: the dagrun: prefix is reserved for the tags dagrun sets", key.name));
        }
        let length = key.name.chars().count();
        if length == 0 || length > tag_rules::MAX_KEY {
            err(
                key.pos,
                format!("tag key `{}` has {length} characters; EMR allows 1 to {}", key.name, tag_rules::MAX_KEY),
            );
        } else if let Some(c) = tag_rules::refused_char(&key.name) {
            err(
                key.pos,
                format!(
                    "tag key `{}`: `{c}` is not allowed (letters, digits, spaces and _ . : / = + - @ are)",
                    key.name
                ),
            );
        }
        if let Some(problem) = tag_rules::value_problem(&value.value) {
            err(value.pos, format!("the value of tag `{}`: {problem}", key.name));
        }
    }
    let ours = 4; // dagrun:pipeline, dagrun:run, dagrun:runs, dagrun:instance
    if tags.len() + ours > tag_rules::MAX_TAGS {
        let pos = spec.tags.as_ref().and_then(|t| t.0.first()).map_or(spec.pos, |(k, _)| k.pos);
        err(
            pos,
            format!("{} tags and dagrun's {ours} make more than EMR's {} per cluster", tags.len(), tag_rules::MAX_TAGS),
        );
    }
    EmrSettings {
        name: text(&spec.name),
        release_label: spec.release_label.value.clone(),
        applications,
        instance_groups,
        instance_fleets,
        service_role: spec.service_role.value.clone(),
        instance_profile: spec.instance_profile.value.clone(),
        log_uri: spec.log_uri.value.clone(),
        subnet_id: text(&spec.subnet_id),
        security_configuration: text(&spec.security_configuration),
        bootstrap_actions: spec
            .bootstrap_actions
            .iter()
            .flatten()
            .map(|b| BootstrapAction {
                name: b.name.value.clone(),
                path: b.path.value.clone(),
                args: b.args.iter().flatten().map(|a| a.value.clone()).collect(),
            })
            .collect(),
        tags,
        configurations: spec
            .configurations
            .iter()
            .flatten()
            .map(|c| Configuration {
                classification: c.classification.value.clone(),
                properties: c
                    .properties
                    .as_ref()
                    .map(|p| p.0.iter().map(|(k, v)| (k.name.clone(), v.value.clone())).collect())
                    .unwrap_or_default(),
            })
            .collect(),
        idle_timeout,
        staging: spec.staging.value.trim_end_matches('/').to_string(),
        region: text(&spec.region),
        poll_interval,
        step_concurrency,
        keep_failed_staging,
        prices,
        auto_max_local: spec.auto_max_local.as_ref().map_or(DEFAULT_AUTO_MAX_LOCAL, |d| d.value.0),
    }
}

/// Decodes `engines:` when no task runs on EMR: only unknown keys are reported, since the values
/// may name variables that local runs leave unset.
pub(crate) fn check_keys_only(node: &Node, decoder: &mut Decoder) {
    let before = decoder.diagnostics.len();
    let _ = EnginesSpec::decode(node, decoder);
    let mut kept = Vec::new();
    for d in decoder.diagnostics.drain(before..) {
        if d.message.starts_with("unknown key") {
            kept.push(d);
        }
    }
    decoder.diagnostics.extend(kept);
}
