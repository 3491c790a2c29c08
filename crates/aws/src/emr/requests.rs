//! The requests the EMR engine sends, built once from the validated settings: RunJobFlow for the
//! run's cluster and AddJobFlowSteps for each task attempt. They are plain data in the API's own
//! field names, so `--dry-run` prints exactly what would be sent, and one conversion turns them
//! into SDK calls.

use aws_sdk_emr::types::{
    ActionOnFailure, Application, AutoTerminationPolicy, BootstrapActionConfig, Configuration, HadoopJarStepConfig,
    InstanceFleetConfig, InstanceFleetType, InstanceGroupConfig, InstanceRoleType, InstanceTypeConfig,
    JobFlowInstancesConfig, MarketType, ScriptBootstrapActionConfig, StepConfig, Tag,
};
use dagrun_core::emr::EmrSettings;
use serde::Serialize;

/// Tags dagrun puts on every cluster it starts (`dagrun emr gc` finds clusters by them).
pub(crate) const TAG_PIPELINE: &str = "dagrun:pipeline";
pub(crate) const TAG_RUN: &str = "dagrun:run";
pub(crate) const TAG_RUNS: &str = "dagrun:runs";
/// The process (a run instance, the lease's token) that started the cluster: a run id may be used
/// again, an instance never is.
pub(crate) const TAG_INSTANCE: &str = "dagrun:instance";

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct RunJobFlowRequest {
    pub name: String,
    pub release_label: String,
    pub log_uri: String,
    pub applications: Vec<NameOnly>,
    pub instances: Instances,
    pub service_role: String,
    pub job_flow_role: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub security_configuration: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub bootstrap_actions: Vec<BootstrapAction>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub configurations: Vec<Config>,
    pub tags: Vec<KeyValue>,
    pub auto_termination_policy: IdleTimeout,
    pub step_concurrency_level: u32,
    pub visible_to_all_users: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct NameOnly {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct Instances {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub instance_groups: Vec<Group>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub instance_fleets: Vec<Fleet>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ec2_subnet_id: Option<String>,
    /// The cluster waits for steps between tasks; the idle timeout ends it if dagrun does not.
    pub keep_job_flow_alive_when_no_steps: bool,
    pub termination_protected: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct Group {
    pub name: String,
    pub instance_role: String,
    pub market: String,
    pub instance_type: String,
    pub instance_count: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bid_price: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct Fleet {
    pub name: String,
    pub instance_fleet_type: String,
    pub target_on_demand_capacity: u32,
    pub target_spot_capacity: u32,
    pub instance_type_configs: Vec<InstanceType>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct InstanceType {
    pub instance_type: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct BootstrapAction {
    pub name: String,
    pub script_bootstrap_action: Script,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct Script {
    pub path: String,
    pub args: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Config {
    pub classification: String,
    pub properties: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct KeyValue {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct IdleTimeout {
    /// Seconds.
    pub idle_timeout: u64,
}

/// One AddJobFlowSteps call with one step.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct AddStepRequest {
    pub job_flow_id: String,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct Step {
    pub name: String,
    pub action_on_failure: String,
    pub hadoop_jar_step: JarStep,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct JarStep {
    pub jar: String,
    pub args: Vec<String>,
}

/// The cluster request for one run instance.
pub(crate) fn run_job_flow(
    settings: &EmrSettings,
    pipeline: &str,
    run_id: &str,
    instance: &str,
    runs_dir: &str,
) -> RunJobFlowRequest {
    let mut tags: Vec<KeyValue> =
        settings.tags.iter().map(|(k, v)| KeyValue { key: k.clone(), value: v.clone() }).collect();
    let runs = dagrun_core::emr::runs_tag_value(runs_dir);
    for (key, value) in [(TAG_PIPELINE, pipeline), (TAG_RUN, run_id), (TAG_INSTANCE, instance), (TAG_RUNS, &runs)] {
        tags.push(KeyValue { key: key.into(), value: value.into() });
    }
    RunJobFlowRequest {
        name: settings.name.clone().unwrap_or_else(|| format!("dagrun {pipeline} {run_id}")),
        release_label: settings.release_label.clone(),
        log_uri: settings.log_uri.clone(),
        applications: settings.applications.iter().map(|a| NameOnly { name: a.clone() }).collect(),
        instances: Instances {
            instance_groups: settings
                .instance_groups
                .iter()
                .map(|g| Group {
                    name: g.name.clone(),
                    instance_role: g.role.clone(),
                    market: g.market.clone(),
                    instance_type: g.instance_type.clone(),
                    instance_count: g.count,
                    bid_price: g.bid_price.clone(),
                })
                .collect(),
            instance_fleets: settings
                .instance_fleets
                .iter()
                .map(|f| Fleet {
                    name: f.name.clone(),
                    instance_fleet_type: f.role.clone(),
                    target_on_demand_capacity: f.on_demand,
                    target_spot_capacity: f.spot,
                    instance_type_configs: f
                        .instance_types
                        .iter()
                        .map(|t| InstanceType { instance_type: t.clone() })
                        .collect(),
                })
                .collect(),
            ec2_subnet_id: settings.subnet_id.clone(),
            keep_job_flow_alive_when_no_steps: true,
            termination_protected: false,
        },
        service_role: settings.service_role.clone(),
        job_flow_role: settings.instance_profile.clone(),
        security_configuration: settings.security_configuration.clone(),
        bootstrap_actions: settings
            .bootstrap_actions
            .iter()
            .map(|b| BootstrapAction {
                name: b.name.clone(),
                script_bootstrap_action: Script { path: b.path.clone(), args: b.args.clone() },
            })
            .collect(),
        configurations: settings
            .configurations
            .iter()
            .map(|c| Config { classification: c.classification.clone(), properties: c.properties.clone() })
            .collect(),
        tags,
        auto_termination_policy: IdleTimeout { idle_timeout: settings.idle_timeout.as_secs() },
        step_concurrency_level: settings.step_concurrency,
        visible_to_all_users: true,
    }
}

/// The deterministic name of a task attempt's step: reattaching after a restart finds it by name.
pub(crate) fn step_name(pipeline: &str, run_id: &str, task: &str, attempt: u32) -> String {
    format!("dagrun:{pipeline}:{run_id}:{task}:{attempt}")
}

/// How long after `timeout`'s TERM a step that ignores it is killed.
const KILL_AFTER: &str = "--kill-after=60s";

/// The step that runs one task attempt, through `command-runner.jar` on the primary node:
/// - `timeout <task timeout> spark-submit ...`: EMR has no step timeout, so the cluster bounds the
///   step itself. A runner killed with -9 costs at most the task timeout and then the idle
///   timeout (the step's wait in the queue does not count: `timeout` starts with the step).
/// - `--deploy-mode client`: the driver runs in the step's own process, so the step's
///   `stderr.gz` holds the Python error, not YARN's report of an application that failed.
pub(crate) fn add_step(
    cluster_id: &str,
    name: String,
    runner_uri: &str,
    spec_uri: &str,
    timeout: std::time::Duration,
) -> AddStepRequest {
    let seconds = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
    AddStepRequest {
        job_flow_id: cluster_id.to_string(),
        steps: vec![Step {
            name,
            action_on_failure: "CONTINUE".into(),
            hadoop_jar_step: JarStep {
                jar: "command-runner.jar".into(),
                args: vec![
                    "timeout".into(),
                    KILL_AFTER.into(),
                    format!("{}s", seconds.max(1)),
                    "spark-submit".into(),
                    "--deploy-mode".into(),
                    "client".into(),
                    "--conf".into(),
                    "spark.sql.session.timeZone=UTC".into(),
                    runner_uri.into(),
                    spec_uri.into(),
                ],
            },
        }],
    }
}

/// An empty list would be sent as `[]`, which is not what the dry run printed: send none.
fn non_empty<T>(items: Vec<T>) -> Option<Vec<T>> {
    Some(items).filter(|v| !v.is_empty())
}

impl RunJobFlowRequest {
    /// The SDK call for this request.
    pub(crate) fn send_with(
        &self,
        client: &aws_sdk_emr::Client,
    ) -> aws_sdk_emr::operation::run_job_flow::builders::RunJobFlowFluentBuilder {
        let instances = JobFlowInstancesConfig::builder()
            .set_instance_groups(non_empty(
                self.instances
                    .instance_groups
                    .iter()
                    .map(|g| {
                        InstanceGroupConfig::builder()
                            .name(&g.name)
                            .instance_role(InstanceRoleType::from(g.instance_role.as_str()))
                            .market(MarketType::from(g.market.as_str()))
                            .instance_type(&g.instance_type)
                            .instance_count(g.instance_count as i32)
                            .set_bid_price(g.bid_price.clone())
                            .build()
                    })
                    .collect(),
            ))
            .set_instance_fleets(non_empty(
                self.instances
                    .instance_fleets
                    .iter()
                    .map(|f| {
                        let mut b = InstanceFleetConfig::builder()
                            .name(&f.name)
                            .instance_fleet_type(InstanceFleetType::from(f.instance_fleet_type.as_str()))
                            .target_on_demand_capacity(f.target_on_demand_capacity as i32)
                            .target_spot_capacity(f.target_spot_capacity as i32);
                        for t in &f.instance_type_configs {
                            b = b.instance_type_configs(
                                InstanceTypeConfig::builder().instance_type(&t.instance_type).build(),
                            );
                        }
                        b.build()
                    })
                    .collect(),
            ))
            .set_ec2_subnet_id(self.instances.ec2_subnet_id.clone())
            .keep_job_flow_alive_when_no_steps(self.instances.keep_job_flow_alive_when_no_steps)
            .termination_protected(self.instances.termination_protected)
            .build();
        let mut call = client
            .run_job_flow()
            .name(&self.name)
            .release_label(&self.release_label)
            .log_uri(&self.log_uri)
            .instances(instances)
            .service_role(&self.service_role)
            .job_flow_role(&self.job_flow_role)
            .set_security_configuration(self.security_configuration.clone())
            .auto_termination_policy(
                AutoTerminationPolicy::builder().idle_timeout(self.auto_termination_policy.idle_timeout as i64).build(),
            )
            .step_concurrency_level(self.step_concurrency_level as i32)
            .visible_to_all_users(self.visible_to_all_users);
        for a in &self.applications {
            call = call.applications(Application::builder().name(&a.name).build());
        }
        for b in &self.bootstrap_actions {
            call = call.bootstrap_actions(
                BootstrapActionConfig::builder()
                    .name(&b.name)
                    .script_bootstrap_action(
                        ScriptBootstrapActionConfig::builder()
                            .path(&b.script_bootstrap_action.path)
                            .set_args(Some(b.script_bootstrap_action.args.clone()))
                            .build(),
                    )
                    .build(),
            );
        }
        for c in &self.configurations {
            let mut config = Configuration::builder().classification(&c.classification);
            for (k, v) in &c.properties {
                config = config.properties(k, v);
            }
            call = call.configurations(config.build());
        }
        for t in &self.tags {
            call = call.tags(Tag::builder().key(&t.key).value(&t.value).build());
        }
        call
    }
}

impl AddStepRequest {
    pub(crate) fn send_with(
        &self,
        client: &aws_sdk_emr::Client,
    ) -> aws_sdk_emr::operation::add_job_flow_steps::builders::AddJobFlowStepsFluentBuilder {
        let mut call = client.add_job_flow_steps().job_flow_id(&self.job_flow_id);
        for s in &self.steps {
            call = call.steps(
                StepConfig::builder()
                    .name(&s.name)
                    .action_on_failure(ActionOnFailure::from(s.action_on_failure.as_str()))
                    .hadoop_jar_step(
                        HadoopJarStepConfig::builder()
                            .jar(&s.hadoop_jar_step.jar)
                            .set_args(Some(s.hadoop_jar_step.args.clone()))
                            .build(),
                    )
                    .build(),
            );
        }
        call
    }
}
