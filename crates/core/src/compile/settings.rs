//! The run-wide sections: `engines:` (which engines a run uses and their settings), `storage.s3`,
//! and each task's engine, timeout and retry policy against the defaults.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::auto::AUTO;
use crate::decode::{Decode, Decoder, DurationValue, Located};
use crate::diagnostic::{Diagnostic, Pos, Severity, SourceFile, suggestion};
use crate::emr::{ENGINE, EmrSettings};
use crate::path::is_s3;
use crate::plan::{Action, Plan, PlannedTask, S3Settings};
use crate::retry::RetryPolicy;
use crate::spec::{EnginesSpec, RetrySpec, S3Spec, ServerSideEncryption, StorageClass, TableFormat};
use crate::units::format_duration;
use crate::vars::{self, DeclaredVar, VarInputs, Vars};
use crate::yaml::Node;

use super::{Builder, emr, places};

/// The `engines:` section, read once the tasks say which engines the run uses. The EMR settings
/// are interpolated and checked in full only when a task runs on `emr` (roles and log URI are
/// variables a local run may leave unset); otherwise only their keys are checked.
pub(super) fn engine_settings(
    plan: &Plan,
    node: Option<&Node>,
    vars: &Vars,
    declared: &[DeclaredVar],
    inputs: &VarInputs,
    source: &SourceFile,
    diags: &mut Vec<Diagnostic>,
) -> (Option<EmrSettings>, Vec<places::Place>, BTreeMap<String, String>) {
    let mut emr_places = Vec::new();
    // `engine: auto` tasks may go to EMR: what would stop them is noted, not an error.
    let mut unavailable = BTreeMap::new();
    let auto: Vec<&PlannedTask> = plan.tasks.iter().filter(|t| t.engine == AUTO).collect();
    for t in &auto {
        let why = match &t.action {
            Action::QualityCheck(_) => {
                let message = format!("task `{}`: quality checks run on the local engine, not on auto", t.id);
                diags.push(Diagnostic::error(t.pos, message));
                continue;
            }
            Action::Extract(e) if !is_s3(&e.path) => {
                format!("it reads `{}`, not an s3:// path", e.path)
            }
            Action::Load(l) if l.format == TableFormat::Delta => "a Delta load commits in dagrun's process".into(),
            Action::Load(l) if !is_s3(&l.path) => format!("it writes `{}`, not an s3:// path", l.path),
            _ => continue,
        };
        unavailable.insert(t.id.clone(), why);
    }
    let on_emr: Vec<&PlannedTask> = plan.tasks.iter().filter(|t| t.engine == ENGINE).collect();
    for t in &on_emr {
        let (verb, path) = match &t.action {
            Action::QualityCheck(_) => {
                let message = format!("task `{}`: quality checks run on the local engine, not on emr", t.id);
                diags.push(Diagnostic::error(t.pos, message));
                continue;
            }
            Action::Extract(e) => ("reads", &e.path),
            Action::Load(l) if l.format == TableFormat::Delta => {
                let message = format!(
                    "task `{}`: a `format: delta` load runs on the local engine, not on emr (dagrun commits \
                     Delta versions itself; Spark steps never write Delta)",
                    t.id
                );
                diags.push(Diagnostic::error(t.pos, message).with_hint(
                    "drop `engine:` from the load: it reads the table its upstream task made on EMR and commits it",
                ));
                continue;
            }
            Action::Load(l) => ("writes", &l.path),
            Action::Transform(_) => continue,
        };
        if !is_s3(path) {
            let message = format!("task `{}` runs on emr and {verb} `{path}`: EMR steps use s3:// paths only", t.id);
            diags.push(
                Diagnostic::error(t.pos, message).with_hint("pass an s3:// URI with --set, or run the task on local"),
            );
        }
    }

    let mut cx = Decoder::new(source);
    let settings = match node {
        Some(node) if !on_emr.is_empty() => {
            let mut node = node.clone();
            vars::interpolate_tree(&mut node, vars, declared, inputs, source, diags);
            let spec = EnginesSpec::decode(&node, &mut cx);
            spec.and_then(|s| s.emr).map(|emr| {
                let settings = emr::validate(&emr, plan, diags);
                emr_places.push(places::Place::output("engines.emr.staging", &settings.staging, emr.staging.pos));
                emr_places.push(places::Place::output(
                    "engines.emr.log_uri (where EMR writes logs)",
                    &settings.log_uri,
                    emr.log_uri.pos,
                ));
                settings
            })
        }
        Some(node) if !auto.is_empty() => {
            // Validated apart: an EMR section that does not validate (variables only EMR needs
            // left unset) keeps the auto tasks local, and says why.
            emr::check_keys_only(node, &mut cx);
            let mut scratch = Vec::new();
            let mut node = node.clone();
            vars::interpolate_tree(&mut node, vars, declared, inputs, source, &mut scratch);
            let mut apart = Decoder::new(source);
            let spec = EnginesSpec::decode(&node, &mut apart);
            let settings = spec.and_then(|s| s.emr).map(|emr| emr::validate(&emr, plan, &mut scratch));
            scratch.append(&mut apart.diagnostics);
            match scratch.iter().find(|d| d.severity == Severity::Error) {
                Some(first) => {
                    unavailable.insert("*".into(), format!("engines.emr does not validate: {}", first.message));
                    None
                }
                None if settings.is_none() => {
                    unavailable.insert("*".into(), "the pipeline has no engines.emr section".into());
                    None
                }
                None => settings,
            }
        }
        Some(node) => {
            emr::check_keys_only(node, &mut cx);
            None
        }
        None => {
            if !auto.is_empty() {
                unavailable.insert("*".into(), "the pipeline has no engines.emr section".into());
            }
            None
        }
    };
    diags.append(&mut cx.diagnostics);
    if settings.is_none()
        && let Some(first) = on_emr.first()
        && !diags.iter().any(|d| d.severity == Severity::Error)
    {
        diags.push(Diagnostic::error(
            first.pos,
            format!("task `{}` runs on emr, but the pipeline has no `engines.emr` section", first.id),
        ));
    }
    (settings, emr_places, unavailable)
}

impl Builder<'_> {
    pub(super) fn s3_settings(&mut self, spec: Option<&S3Spec>) -> S3Settings {
        let mut settings = S3Settings::default();
        let Some(spec) = spec else { return settings };
        let text = |v: &Option<Located<String>>| v.as_ref().map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
        settings.endpoint_url = text(&spec.endpoint_url);
        if let (Some(url), Some(node)) = (&settings.endpoint_url, &spec.endpoint_url)
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            self.error(node.pos, format!("endpoint_url `{url}` must start with http:// or https://"));
        }
        settings.region = text(&spec.region);
        settings.path_style = spec.path_style.as_ref().map(|p| p.value);
        if let Some(c) = &spec.max_concurrency {
            if !(1..=1024).contains(&c.value) {
                self.error(c.pos, format!("max_concurrency must be between 1 and 1024, found {}", c.value));
            }
            settings.max_concurrency = c.value.clamp(1, 1024) as usize;
        }
        if let Some(a) = &spec.max_attempts {
            if a.value == 0 {
                self.error(a.pos, "max_attempts must be at least 1");
            }
            settings.max_attempts = a.value.max(1);
        }
        if let Some(size) = &spec.part_size {
            if size.value.0 < 5 << 20 {
                self.error(size.pos, "part_size must be at least 5MiB (S3's smallest part)");
            }
            settings.part_size = size.value.0.max(5 << 20);
        }
        if let Some(size) = &spec.multipart_threshold {
            settings.multipart_threshold = size.value.0;
        }
        if settings.multipart_threshold < settings.part_size {
            let pos = spec.multipart_threshold.as_ref().or(spec.part_size.as_ref()).map_or(spec.pos, |s| s.pos);
            self.error(pos, "multipart_threshold must be at least part_size");
        }
        settings.server_side_encryption = spec.server_side_encryption.as_ref().map(|s| s.value);

        settings.kms_key_id = text(&spec.kms_key_id);
        if let Some(key) = &spec.kms_key_id
            && settings.server_side_encryption != Some(ServerSideEncryption::AwsKms)
        {
            self.error(key.pos, "kms_key_id needs `server_side_encryption: aws:kms`");
        }
        settings.storage_class = spec.storage_class.as_ref().map(|s| s.value);
        if let Some(class) = &spec.storage_class {
            match class.value {
                StorageClass::Glacier | StorageClass::DeepArchive => {
                    self.error(
                        class.pos,
                        format!(
                            "storage_class {}: its objects must be restored before anyone reads them, and dagrun reads its tables back (checks, merges, report answers), as do your analysts' engines",
                            class.value.as_str()
                        ),
                    )
                    .hint = Some("archive old partitions with an S3 lifecycle rule instead".into());
                }
                StorageClass::StandardIa | StorageClass::OnezoneIa | StorageClass::GlacierIr => {
                    self.warnings.push(
                        Diagnostic::warning(
                            class.pos,
                            format!(
                                "storage_class {} bills each object as at least 128 KB for at least {} days: a table's small files (a Sparkify song partition is about 2 KB) and a table replaced nightly cost more than in STANDARD",
                                class.value.as_str(),
                                if class.value == StorageClass::GlacierIr { 90 } else { 30 }
                            ),
                        )
                        .with_hint("INTELLIGENT_TIERING has no minimum duration and does not bill small objects as 128 KB"),
                    );
                }
                _ => {}
            }
        }
        settings
    }

    pub(super) fn check_engine(&mut self, engine: &Located<String>) {
        if !self.options.engines.iter().any(|e| e == engine.as_str()) {
            let hint = suggestion(engine, self.options.engines.iter().map(String::as_str))
                .unwrap_or_else(|| format!("available engines: {}", self.options.engines.join(", ")));
            let pos = Pos { len: engine.len(), ..engine.pos };
            self.error(pos, format!("unknown engine `{}`", engine.value)).hint = Some(hint);
        }
    }

    pub(super) fn check_timeout(&mut self, t: Located<DurationValue>) -> Duration {
        if t.value.0.is_zero() {
            self.error(t.pos, "timeout must be longer than zero");
        }
        t.value.0
    }

    pub(super) fn retry_policy(&mut self, base: &RetryPolicy, spec: &RetrySpec) -> RetryPolicy {
        let mut policy = *base;
        if let Some(n) = &spec.max_attempts {
            if n.value == 0 {
                self.error(n.pos, "max_attempts must be at least 1 (1 means no retries)");
            }
            policy.max_attempts = n.value.max(1);
        }
        if let Some(d) = &spec.initial_delay {
            policy.initial_delay = d.value.0;
        }
        if let Some(m) = &spec.multiplier {
            if m.value < 1.0 {
                self.error(m.pos, format!("multiplier must be at least 1, found {}", m.value));
            }
            policy.multiplier = m.value;
        }
        if let Some(d) = &spec.max_delay {
            policy.max_delay = d.value.0;
        }
        if let Some(j) = &spec.jitter {
            policy.jitter = j.value;
        }
        if policy.max_delay < policy.initial_delay {
            let pos = spec
                .max_delay
                .as_ref()
                .map(|d| d.pos)
                .or(spec.initial_delay.as_ref().map(|d| d.pos))
                .unwrap_or(spec.pos);
            self.error(
                pos,
                format!(
                    "max_delay ({}) is shorter than initial_delay ({})",
                    format_duration(policy.max_delay),
                    format_duration(policy.initial_delay)
                ),
            );
        }
        policy
    }
}
