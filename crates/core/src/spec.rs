//! The raw pipeline spec: types that mirror the YAML file key for key, with positions, before any
//! cross-checking: the whole file ([`PipelineSpec`]), its tasks, storage settings, report queries
//! and the `engines.emr` section. [`crate::compile`] turns a spec into a validated plan; nothing
//! else should read specs.
//!
//! The YAML reference in `docs/pipeline.md` documents these types; keep the two in step.

use crate::decode::{ByteSize, Decode, Decoder, DurationValue, Entries, Located, MapReader, OneOrMany};

use crate::decode_struct;
use crate::diagnostic::{Diagnostic, Pos, suggestion};
use crate::yaml::{Node, Value};

/// Declares a closed set of names decoded from text, with aliases and did-you-mean on a typo.
macro_rules! decode_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident as $what:literal { $( $(#[$vmeta:meta])* $variant:ident = $text:literal $(| $alias:literal)* ),* $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $( $(#[$vmeta])* $variant ),* }

        impl $name {
            /// The names accepted in a pipeline file (canonical names first).
            pub(crate) const NAMES: &'static [&'static str] = &[$($text),*];

            /// The canonical name.
            pub fn as_str(&self) -> &'static str {
                match self { $( $name::$variant => $text ),* }
            }

            pub(crate) fn from_name(name: &str) -> Option<Self> {
                match name { $( $text $(| $alias)* => Some($name::$variant), )* _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        // In run records: the canonical name, so the JSON reads as the pipeline file does.
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::from_name(&text).ok_or_else(|| {
                    serde::de::Error::custom(format!("unknown {} `{text}`: expected one of {}", $what, Self::NAMES.join(", ")))
                })
            }
        }

        impl Decode for $name {
            fn decode(node: &Node, cx: &mut Decoder) -> Option<Self> {
                let Value::Str(text) = &node.value else {
                    cx.expected(node, concat!($what, " (one of: ", $($text, " "),* , ")"));
                    return None;
                };
                let parsed = Self::from_name(text.as_str());
                if parsed.is_none() {
                    let hint = suggestion(text, Self::NAMES.iter().copied())
                        .unwrap_or_else(|| format!("expected one of: {}", Self::NAMES.join(", ")));
                    let pos = Pos { len: text.len(), ..node.pos };
                    cx.push(Diagnostic::error(pos, format!("unknown {} `{text}`", $what)).with_hint(hint));
                }
                parsed
            }
        }
    };
}

decode_enum! {
    /// What a task does. Closed: adding a kind means adding a variant and handling it everywhere.
    pub enum TaskKind as "task kind" {
        /// Read JSON / JSON-lines files into a table with a declared schema.
        Extract = "extract",
        /// SQL over upstream tables.
        Transform = "transform",
        /// Declarative data tests on an upstream table.
        QualityCheck = "quality_check",
        /// Publish a table as partitioned Parquet.
        Load = "load",
    }
}

decode_enum! {
    /// How a source file holds its records.
    pub enum JsonFormat as "format" {
        /// One JSON document per file (an object, or an array of objects).
        Json = "json",
        /// One JSON object per line (NDJSON).
        JsonLines = "jsonl" | "json_lines" | "ndjson",
    }
}

decode_enum! {
    /// What an extract does about source fields its schema neither declares nor ignores.
    pub enum NewFields as "on_new_fields" {
        /// Nothing (the default): undeclared fields are not loaded, and not looked at.
        Ignore = "ignore",
        /// Count them per field, warn, and keep them in the run record and report.
        Warn = "warn",
        /// Fail the extract, naming each field and where it first appears.
        Fail = "fail",
    }
}

impl NewFields {
    /// Whether this is the default, `ignore`.
    pub fn is_ignore(&self) -> bool {
        *self == NewFields::Ignore
    }
}

decode_enum! {
    /// A column type in an extract schema.
    pub enum ColumnType as "column type" {
        /// Text, kept byte-exact; numbers keep their source spelling.
        String = "string" | "str" | "text" | "varchar",
        /// A 64-bit integer; whole floats such as `1.0` count.
        Int = "int" | "bigint" | "long" | "int64" | "integer",
        /// A 64-bit float.
        Float = "float" | "double" | "float64",
        /// `true` or `false`.
        Bool = "bool" | "boolean",
        /// Epoch milliseconds, read as a UTC timestamp.
        TimestampMs = "timestamp_ms",
    }
}

decode_enum! {
    /// Parquet compression codec.
    pub enum Compression as "compression" {
        /// Zstandard (the default): small files, fast to read.
        Zstd = "zstd",
        /// Snappy: what many Spark jobs write.
        Snappy = "snappy",
        /// No compression.
        Uncompressed = "none" | "uncompressed",
    }
}

decode_enum! {
    /// How a load publishes its table.
    pub enum TableFormat as "table format" {
        /// Hive-partitioned Parquet files named by dagrun's `_manifest.json` (readers that list the
        /// folder see old and new files together while a load runs).
        Parquet = "parquet",
        /// A Delta Lake table: every load is one commit of the `_delta_log`, so every Delta reader
        /// sees the previous version or the new one, never a mix.
        Delta = "delta",
    }
}

decode_enum! {
    /// What a load replaces when the run is scoped to some days of its input.
    pub enum LoadMode as "load mode" {
        /// The whole table (a run scoped to some days is refused).
        Overwrite = "overwrite",
        /// The rows of the run's days (by `slice_column`): deleted and appended in one commit.
        Partitions = "partitions",
        /// Rows by `keys`: the published rows and the new ones, the latest by `order_by` kept.
        Merge = "merge",
    }
}

decode_enum! {
    /// How retry delays are randomised.
    pub enum Jitter as "jitter" {
        /// A uniform delay between zero and the backoff (AWS's "full jitter").
        Full = "full",
        /// Half the backoff plus a uniform share of the other half.
        Equal = "equal",
        /// Exactly the backoff.
        None = "none",
    }
}

decode_enum! {
    /// What a failing check does.
    pub enum CheckSeverity as "severity" {
        /// Fails the task, so nothing downstream is published.
        Error = "error",
        /// Reported, but the task succeeds.
        Warn = "warn" | "warning",
    }
}

decode_enum! {
    /// S3 server-side encryption.
    pub enum ServerSideEncryption as "server-side encryption" {
        /// SSE-S3, keys managed by S3.
        Aes256 = "AES256" | "aes256" | "sse-s3",
        /// SSE-KMS, with `kms_key_id` or the account's default key.
        AwsKms = "aws:kms" | "sse-kms",
    }
}

decode_enum! {
    /// S3 storage class of written objects.
    pub enum StorageClass as "storage class" {
        /// S3 Standard.
        Standard = "STANDARD",
        /// Standard-Infrequent Access: each object billed as at least 128 KB for 30 days.
        StandardIa = "STANDARD_IA",
        /// One Zone-Infrequent Access.
        OnezoneIa = "ONEZONE_IA",
        /// Intelligent-Tiering.
        IntelligentTiering = "INTELLIGENT_TIERING",
        /// Reduced Redundancy (deprecated by AWS).
        ReducedRedundancy = "REDUCED_REDUNDANCY",
        /// Glacier Instant Retrieval.
        GlacierIr = "GLACIER_IR",
        /// Glacier Flexible Retrieval: objects must be restored before they are read.
        Glacier = "GLACIER",
        /// Glacier Deep Archive: objects must be restored before they are read.
        DeepArchive = "DEEP_ARCHIVE",
    }
}

decode_struct! {
    /// Where data lives, beyond the local disk.
    pub struct StorageSpec as "storage settings" {
        s3: Option<S3Spec>,
    }
}

decode_struct! {
    /// How dagrun talks to S3. Credentials and region come from the standard AWS chain.
    pub struct S3Spec as "S3 settings" {
        /// An S3-compatible endpoint; default: AWS, or AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL.
        endpoint_url: Option<Located<String>>,
        region: Option<Located<String>>,
        /// Path-style addressing; default: on for an IP address or localhost endpoint.
        path_style: Option<Located<bool>>,
        /// Requests in flight at once (default 64).
        max_concurrency: Option<Located<u32>>,
        /// Attempts per request for transient failures (default 6).
        max_attempts: Option<Located<u32>>,
        /// Files at least this large are uploaded in parts (default 16MiB).
        multipart_threshold: Option<Located<ByteSize>>,
        /// The size of each part (default 8MiB; S3 needs at least 5MiB).
        part_size: Option<Located<ByteSize>>,
        server_side_encryption: Option<Located<ServerSideEncryption>>,
        kms_key_id: Option<Located<String>>,
        storage_class: Option<Located<StorageClass>>,
    }
}

decode_enum! {
    /// The role of an EMR instance group or fleet.
    pub enum InstanceRole as "instance role" {
        /// The one node that runs the driver.
        Master = "master" | "MASTER" | "primary",
        /// Nodes that run executors and hold HDFS.
        Core = "core" | "CORE",
        /// Nodes that only run executors.
        Task = "task" | "TASK",
    }
}

impl InstanceRole {
    /// The name in EMR's API.
    pub(crate) fn api(&self) -> &'static str {
        match self {
            InstanceRole::Master => "MASTER",
            InstanceRole::Core => "CORE",
            InstanceRole::Task => "TASK",
        }
    }
}

decode_enum! {
    /// How EMR instances are bought.
    pub enum Market as "market" {
        /// At the on-demand price.
        OnDemand = "on_demand" | "ON_DEMAND" | "on-demand",
        /// Spare capacity at the spot price, which AWS may take back.
        Spot = "spot" | "SPOT",
    }
}

impl Market {
    /// The name in EMR's API.
    pub(crate) fn api(&self) -> &'static str {
        match self {
            Market::OnDemand => "ON_DEMAND",
            Market::Spot => "SPOT",
        }
    }
}

decode_enum! {
    /// How a report query is drawn.

    pub enum ChartKind as "chart" {
        /// Bars: the first column labels, the last column lengths.
        Bar = "bar",
        /// A table only.
        Table = "table",
    }
}

decode_struct! {
    /// A question the HTML report answers from the published tables.
    pub struct ReportQuerySpec as "a report query" {
        title: Located<String>,
        sql: Located<String>,
        chart: Option<Located<ChartKind>>,
    }
}

decode_struct! {
    /// Settings every task inherits unless it sets its own.
    pub struct DefaultsSpec as "defaults" {
        engine: Option<Located<String>>,
        timeout: Option<Located<DurationValue>>,
        retry: Option<RetrySpec>,
    }
}

decode_struct! {
    /// Retry settings as written; missing fields come from `defaults.retry`, then built-in defaults.
    pub struct RetrySpec as "retry settings" {
        max_attempts: Option<Located<u32>>,
        initial_delay: Option<Located<DurationValue>>,
        multiplier: Option<Located<f64>>,
        max_delay: Option<Located<DurationValue>>,
        jitter: Option<Located<Jitter>>,
    }
}

/// One task as written.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TaskSpec {
    pub pos: Pos,
    pub id: Located<String>,
    pub kind: Located<TaskKind>,
    pub description: Option<Located<String>>,
    pub depends_on: Vec<Located<String>>,
    pub engine: Option<Located<String>>,
    pub retry: Option<RetrySpec>,
    pub timeout: Option<Located<DurationValue>>,
    pub params: TaskParams,
}

/// The parameters of each task kind.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TaskParams {
    Extract(ExtractSpec),
    Transform(TransformSpec),
    QualityCheck(QualityCheckSpec),
    Load(LoadSpec),
}

/// Keys every task accepts, whatever its kind.
pub(crate) const TASK_COMMON_KEYS: &[&str] = &["id", "kind", "description", "depends_on", "engine", "retry", "timeout"];

impl TaskKind {
    /// The kind-specific keys of a task of this kind.
    pub(crate) fn param_keys(&self) -> &'static [&'static str] {
        match self {
            TaskKind::Extract => ExtractSpec::KEYS,
            TaskKind::Transform => TransformSpec::KEYS,
            TaskKind::QualityCheck => QualityCheckSpec::KEYS,
            TaskKind::Load => LoadSpec::KEYS,
        }
    }

    pub(crate) const ALL: [TaskKind; 4] =
        [TaskKind::Extract, TaskKind::Transform, TaskKind::QualityCheck, TaskKind::Load];
}

impl Decode for TaskSpec {
    fn decode(node: &Node, cx: &mut Decoder) -> Option<Self> {
        let Value::Map(entries) = &node.value else {
            cx.expected(node, "a mapping for a task");
            return None;
        };
        let id_text = match node.get("id").map(|n| &n.value) {
            Some(Value::Str(id)) => format!("task `{id}`"),
            _ => "a task".to_string(),
        };
        let kind = match node.get("kind") {
            Some(kind_node) => Located::<TaskKind>::decode(kind_node, cx),
            None => {
                cx.push(
                    Diagnostic::error(node.pos, format!("missing required key `kind` in {id_text}"))
                        .with_hint(format!("one of: {}", TaskKind::NAMES.join(", "))),
                );
                None
            }
        };
        // Unknown keys: judged against the kind's keys when the kind is known.
        if let Some(kind) = &kind {
            let allowed: Vec<&str> = TASK_COMMON_KEYS.iter().chain(kind.param_keys()).copied().collect();
            for (key, _) in entries {
                if allowed.contains(&key.name.as_str()) {
                    continue;
                }
                let owner = TaskKind::ALL.iter().find(|k| k.param_keys().contains(&key.name.as_str()));
                match owner {
                    Some(other) => {
                        let pos = Pos { len: key.name.len(), ..key.pos };
                        cx.push(
                            Diagnostic::error(pos, format!("`{}` is not a key of {} tasks", key.name, kind.value))
                                .with_hint(format!("`{}` belongs to {} tasks", key.name, other)),
                        );
                    }
                    None => cx.unknown_key(key, &id_text, &allowed),
                }
            }
        } else {
            let all: Vec<&str> =
                TASK_COMMON_KEYS.iter().chain(TaskKind::ALL.iter().flat_map(|k| k.param_keys())).copied().collect();
            for (key, _) in entries {
                if !all.contains(&key.name.as_str()) {
                    cx.unknown_key(key, &id_text, &all);
                }
            }
        }
        // Read fields from a reader that accepts everything: unknown keys were reported above.
        let all_keys: Vec<&str> = entries.iter().map(|(k, _)| k.name.as_str()).collect();
        let map = cx.map(node, &id_text, &all_keys)?;
        let id = map.field::<Located<String>>(cx, "id");
        let description = map.field::<Option<Located<String>>>(cx, "description");
        let depends_on = map.field::<Option<OneOrMany<Located<String>>>>(cx, "depends_on");
        let engine = map.field::<Option<Located<String>>>(cx, "engine");
        let retry = map.field::<Option<RetrySpec>>(cx, "retry");
        let timeout = map.field::<Option<Located<DurationValue>>>(cx, "timeout");
        let params = match kind.as_ref().map(|k| k.value) {
            Some(TaskKind::Extract) => ExtractSpec::decode_from(&map, cx).map(TaskParams::Extract),
            Some(TaskKind::Transform) => TransformSpec::decode_from(&map, cx).map(TaskParams::Transform),
            Some(TaskKind::QualityCheck) => QualityCheckSpec::decode_from(&map, cx).map(TaskParams::QualityCheck),
            Some(TaskKind::Load) => LoadSpec::decode_from(&map, cx).map(TaskParams::Load),
            None => None,
        };
        // Optional settings that failed to decode were reported; reading on without them lets
        // validation report the task's other problems too (the plan fails either way).
        Some(TaskSpec {
            pos: node.pos,
            id: id?,
            kind: kind?,
            description: description.flatten(),
            depends_on: depends_on.flatten().map(|d| d.0).unwrap_or_default(),
            engine: engine.flatten(),
            retry: retry.flatten(),
            timeout: timeout.flatten(),
            params: params?,
        })
    }
}

decode_struct! {
    /// `kind: extract`: files under `path` matching `glob`, parsed with a declared schema.
    pub struct ExtractSpec as "extract task" {
        /// The folder (or `s3://bucket/prefix`) to read.
        path: Located<String>,
        /// Which files under `path`, e.g. `*/*/*/*.json`; default: every file.
        glob: Option<Located<String>>,
        format: Located<JsonFormat>,
        /// Column name -> type, or -> `{type, from}` to read a differently named field.
        schema: Entries<ColumnSpec>,
        /// How many records may be quarantined before the task fails (default 0).
        max_bad_records: Option<Located<u64>>,
        /// Where the files of one day are, relative to `path`
        /// (`{year}/{month}/{year}-{month}-{day}-*.json`): runs can then be scoped to some days.
        slice_path: Option<Located<String>>,
        /// With `slice_path`: the `timestamp_ms` column whose UTC day a row is of, whatever file
        /// it came in.
        slice_column: Option<Located<String>>,
        /// With `slice_path`: how many days a row's day may be from its file's (default `1d`:
        /// logs rotated by local time or by size hold rows of the day before or after).
        slice_tolerance: Option<Located<DurationValue>>,
        /// What to do about source fields that are neither declared nor listed in
        /// `ignore_fields` (schema drift): `ignore` (default), `warn` or `fail`.
        on_new_fields: Option<Located<NewFields>>,
        /// Source fields known and deliberately not loaded: never reported as new.
        ignore_fields: Option<OneOrMany<Located<String>>>,
    }
}

decode_struct! {
    /// `kind: transform`: one SQL query over upstream tables; its result is a table named after the task.
    pub struct TransformSpec as "transform task" {
        sql: Located<String>,
    }
}

decode_struct! {
    /// `kind: quality_check`: declarative checks on an upstream table.
    pub struct QualityCheckSpec as "quality_check task" {
        table: Located<String>,
        checks: Vec<CheckSpec>,
    }
}

decode_struct! {
    /// `kind: load`: publishes an upstream table as hive-partitioned Parquet at `path`, atomically.
    pub struct LoadSpec as "load task" {
        table: Located<String>,
        path: Located<String>,
        format: Option<Located<TableFormat>>,
        partition_by: Option<OneOrMany<Located<String>>>,
        compression: Option<Located<Compression>>,
        retention: Option<Located<DurationValue>>,
        /// What a run scoped to some days replaces: the whole table, those days' rows, or rows
        /// merged by key.
        mode: Option<Located<LoadMode>>,
        /// `mode: partitions`: the timestamp column whose UTC day says which slice a row is of.
        slice_column: Option<Located<String>>,
        /// `mode: merge`: the columns that identify a row.
        keys: Option<OneOrMany<Located<String>>>,
        /// `mode: merge`: of two rows with one key, the one with the greater values of these
        /// columns is kept (the new one on a tie).
        order_by: Option<OneOrMany<Located<String>>>,
    }
}

/// A schema column: a type, or a type read from a differently named source field.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ColumnSpec {
    pub pos: Pos,
    pub ty: Located<ColumnType>,
    /// The JSON field to read; `None` means the column's own name.
    pub from: Option<Located<String>>,
}

impl Decode for ColumnSpec {
    fn decode(node: &Node, cx: &mut Decoder) -> Option<Self> {
        match &node.value {
            Value::Str(_) => {
                let ty = Located::<ColumnType>::decode(node, cx)?;
                Some(ColumnSpec { pos: node.pos, ty, from: None })
            }
            Value::Map(_) => {
                let map = cx.map(node, "a schema column", &["type", "from"])?;
                let ty = map.field::<Located<ColumnType>>(cx, "type");
                let from = map.field::<Option<Located<String>>>(cx, "from");
                Some(ColumnSpec { pos: node.pos, ty: ty?, from: from? })
            }
            _ => {
                cx.expected(node, "a column type such as `string`, or `{type: ..., from: ...}`");
                None
            }
        }
    }
}

/// One check in a `quality_check` task: exactly one check key, plus optional `name` and `severity`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CheckSpec {
    pub pos: Pos,
    pub name: Option<Located<String>>,
    pub severity: Option<Located<CheckSeverity>>,
    pub check: CheckKindSpec,
}

/// The check itself.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum CheckKindSpec {
    /// Each listed column has no nulls.
    NotNull(Vec<Located<String>>),
    /// The listed columns, taken together, identify one row.
    Unique(Vec<Located<String>>),
    /// The table has between `min` and `max` rows.
    RowCount { min: Option<Located<u64>>, max: Option<Located<u64>> },
    /// Every non-null value of `column` is one of `values`.
    AcceptedValues { column: Located<String>, values: Vec<Located<String>> },
    /// Every non-null value of `column` exists in `to`.`field`.
    Relationships { column: Located<String>, to: Located<String>, field: Located<String> },
    /// A query whose returned rows are failures.
    Sql(Located<String>),
}

/// The check keys, one of which each check must have.
pub(crate) const CHECK_KEYS: &[&str] = &["not_null", "unique", "row_count", "accepted_values", "relationships", "sql"];

impl Decode for CheckSpec {
    fn decode(node: &Node, cx: &mut Decoder) -> Option<Self> {
        let allowed: Vec<&str> = CHECK_KEYS.iter().copied().chain(["name", "severity"]).collect();
        let map = cx.map(node, "a check", &allowed)?;
        let name = map.field::<Option<Located<String>>>(cx, "name");
        let severity = map.field::<Option<Located<CheckSeverity>>>(cx, "severity");
        let present: Vec<&str> = CHECK_KEYS.iter().copied().filter(|k| map.node(k).is_some()).collect();
        let check = match present.as_slice() {
            [] => {
                cx.push(
                    Diagnostic::error(node.pos, "a check needs one of the check keys")
                        .with_hint(format!("one of: {}", CHECK_KEYS.join(", "))),
                );
                None
            }
            [one] => decode_check_kind(one, &map, cx),
            [_, second, ..] => {
                let key = map.key(second).expect("present");
                let pos = Pos { len: key.name.len(), ..key.pos };
                cx.push(
                    Diagnostic::error(
                        pos,
                        format!("a check has one check key, this one has {}", present.join(" and ")),
                    )
                    .with_hint("write each check as its own list item"),
                );
                None
            }
        };
        Some(CheckSpec { pos: node.pos, name: name?, severity: severity?, check: check? })
    }
}

fn decode_check_kind(key: &str, map: &MapReader<'_>, cx: &mut Decoder) -> Option<CheckKindSpec> {
    let node = map.node(key)?;
    match key {
        "not_null" => OneOrMany::<Located<String>>::decode(node, cx).map(|c| CheckKindSpec::NotNull(c.0)),
        "unique" => OneOrMany::<Located<String>>::decode(node, cx).map(|c| CheckKindSpec::Unique(c.0)),
        "row_count" => {
            let m = cx.map(node, "row_count", &["min", "max"])?;
            let min = m.field::<Option<Located<u64>>>(cx, "min");
            let max = m.field::<Option<Located<u64>>>(cx, "max");
            Some(CheckKindSpec::RowCount { min: min?, max: max? })
        }
        "accepted_values" => {
            let m = cx.map(node, "accepted_values", &["column", "values"])?;
            let column = m.field::<Located<String>>(cx, "column");
            let values = m.field::<Vec<Located<String>>>(cx, "values");
            Some(CheckKindSpec::AcceptedValues { column: column?, values: values? })
        }
        "relationships" => {
            let m = cx.map(node, "relationships", &["column", "to", "field"])?;
            let column = m.field::<Located<String>>(cx, "column");
            let to = m.field::<Located<String>>(cx, "to");
            let field = m.field::<Located<String>>(cx, "field");
            Some(CheckKindSpec::Relationships { column: column?, to: to?, field: field? })
        }
        "sql" => Located::<String>::decode(node, cx).map(CheckKindSpec::Sql),
        _ => None,
    }
}

/// A whole pipeline file as written, decoded key by key so that one bad task does not hide the
/// problems of the others. `vars` and `engines` are read apart: variables before anything else,
/// the EMR section only when a task runs there.
#[derive(Debug, Clone)]
pub(crate) struct PipelineSpec {
    pub name: Option<Located<String>>,
    pub description: Option<Located<String>>,
    pub runs: Option<Located<String>>,
    pub storage: Option<StorageSpec>,
    pub report: Option<Vec<ReportQuerySpec>>,
    pub budget: Option<BudgetSpec>,
    pub defaults: Option<DefaultsSpec>,
    /// Every task as written: decoded, or `None` where it had errors, with what could still be
    /// read of it (its id and `depends_on`), so that the graph is checked whole.
    pub tasks: Vec<RawTask>,
    pub tasks_pos: Pos,
    pub has_tasks_key: bool,
}

/// One task of the file: its decoded spec, or `None`, and what could be read of it anyway.
#[derive(Debug, Clone)]
pub(crate) struct RawTask {
    pub spec: Option<TaskSpec>,
    pub id: Option<Located<String>>,
    pub depends_on: Vec<Located<String>>,
}

pub(crate) const TOP_KEYS: &[&str] =
    &["name", "description", "vars", "runs", "storage", "engines", "budget", "defaults", "tasks", "report"];

impl Decode for PipelineSpec {
    fn decode(node: &Node, cx: &mut Decoder) -> Option<Self> {
        let map = cx.map(node, "the pipeline", TOP_KEYS)?;
        let name = map.field::<Located<String>>(cx, "name");
        let description = map.field::<Option<Located<String>>>(cx, "description").flatten();
        let runs = map.field::<Option<Located<String>>>(cx, "runs").flatten();
        let storage = map.field::<Option<StorageSpec>>(cx, "storage").flatten();
        let report = map.field::<Option<Vec<ReportQuerySpec>>>(cx, "report").flatten();
        let budget = map.field::<Option<BudgetSpec>>(cx, "budget").flatten();
        let defaults = map.field::<Option<DefaultsSpec>>(cx, "defaults").flatten();
        let mut tasks = Vec::new();
        let tasks_pos = map.node("tasks").map_or(node.pos, |n| n.pos);
        match map.node("tasks").map(|n| (n, &n.value)) {
            Some((_, Value::Seq(items))) => {
                for item in items {
                    let string = |n: &Node| match &n.value {
                        Value::Str(s) => Some(Located::new(s.clone(), n.pos)),
                        _ => None,
                    };
                    let id = item.get("id").and_then(string);
                    // Read apart from the decoding (whose errors were reported): a task with a
                    // typo elsewhere still has its dependencies and cycles checked.
                    let depends_on = match item.get("depends_on").map(|n| (n, &n.value)) {
                        Some((_, Value::Seq(names))) => names.iter().filter_map(string).collect(),
                        Some((n, _)) => string(n).into_iter().collect(),
                        None => Vec::new(),
                    };
                    tasks.push(RawTask { spec: TaskSpec::decode(item, cx), id, depends_on });
                }
            }
            Some((n, _)) => cx.expected(n, "a list of tasks"),
            None => cx.error(node.pos, "missing required key `tasks` in the pipeline"),
        }
        let has_tasks_key = map.node("tasks").is_some();
        Some(PipelineSpec {
            name,
            description,
            runs,
            storage,
            report,
            budget,
            defaults,
            tasks,
            tasks_pos,
            has_tasks_key,
        })
    }
}

// --- engines.emr -----------------------------------------------------------------------------

decode_struct! {
    /// One instance type's price (`engines.emr.prices`), USD per instance-hour.
    pub struct PriceSpec as "an instance price" {
        /// EC2 on-demand.
        ec2: Located<f64>,
        /// The EMR uplift.
        emr: Located<f64>,
    }
}

decode_struct! {
    /// `budget:`: the most a run may spend on EMR.
    pub struct BudgetSpec as "a budget" {
        /// USD; 0 forbids EMR.
        max_usd: Located<f64>,
    }
}

decode_struct! {
    /// One instance group (`instance_groups:`).
    pub struct InstanceGroupSpec as "an instance group" {
        role: Located<InstanceRole>,
        instance_type: Located<String>,
        count: Located<u32>,
        market: Option<Located<Market>>,
        bid_price: Option<Located<String>>,
        name: Option<Located<String>>,
    }
}

decode_struct! {
    /// One instance fleet (`instance_fleets:`).
    pub struct InstanceFleetSpec as "an instance fleet" {
        role: Located<InstanceRole>,
        instance_types: Vec<Located<String>>,
        on_demand: Option<Located<u32>>,
        spot: Option<Located<u32>>,
        name: Option<Located<String>>,
    }
}

decode_struct! {
    /// A bootstrap action.
    pub struct BootstrapSpec as "a bootstrap action" {
        name: Located<String>,
        path: Located<String>,
        args: Option<Vec<Located<String>>>,
    }
}

decode_struct! {
    /// A configuration classification (`spark-defaults`, `spark-env`, ...).
    pub struct ConfigurationSpec as "a configuration" {
        classification: Located<String>,
        properties: Option<Entries<Located<String>>>,
    }
}

decode_struct! {
    /// `engines.emr`.
    pub struct EmrSpec as "EMR settings" {
        /// Cluster name; default `dagrun <pipeline> <run-id>`.
        name: Option<Located<String>>,
        release_label: Located<String>,
        /// Default `[Spark]`.
        applications: Option<Vec<Located<String>>>,
        instance_groups: Option<Vec<InstanceGroupSpec>>,
        instance_fleets: Option<Vec<InstanceFleetSpec>>,
        service_role: Located<String>,
        instance_profile: Located<String>,
        log_uri: Located<String>,
        subnet_id: Option<Located<String>>,
        security_configuration: Option<Located<String>>,
        bootstrap_actions: Option<Vec<BootstrapSpec>>,
        tags: Option<Entries<Located<String>>>,
        configurations: Option<Vec<ConfigurationSpec>>,
        /// Idle time after which EMR terminates the cluster itself (default 1h, 1m to 7d).
        idle_timeout: Option<Located<DurationValue>>,
        /// The `s3://` prefix where a run's step program, task specs and tables go.
        staging: Located<String>,
        /// The EMR region (default: the SDK's region chain, then us-east-1).
        region: Option<Located<String>>,
        /// The longest pause between two status polls (default 10s; polls start at 1s and double).
        poll_interval: Option<Located<DurationValue>>,
        /// How many steps the cluster runs at once (default: the number of EMR tasks, 1 to 256).
        step_concurrency: Option<Located<u32>>,
        /// How long a failed run's staging folder is kept for debugging (default 7d; 0s: not kept).
        keep_failed_staging: Option<Located<DurationValue>>,
        /// Prices per instance type, over dagrun's table: `{m5.xlarge: {ec2: 0.192, emr: 0.048}}`.
        prices: Option<Entries<PriceSpec>>,
        /// `engine: auto` runs a task on EMR when the local engine's planned time passes this (default 1h).
        auto_max_local: Option<Located<DurationValue>>,
    }
}

decode_struct! {
    /// `engines:`.
    pub struct EnginesSpec as "engine settings" {
        emr: Option<EmrSpec>,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnostic::SourceFile;
    use crate::yaml;

    fn decode_task(text: &str) -> (Option<TaskSpec>, Vec<String>) {
        let source = SourceFile::new("t.yaml", text);
        let node = yaml::parse(&source).unwrap();
        let mut cx = Decoder::new(&source);
        let task = TaskSpec::decode(&node, &mut cx);
        let messages = cx
            .diagnostics
            .iter()
            .map(|d| {
                format!(
                    "{}:{} {}{}",
                    d.pos.line,
                    d.pos.col,
                    d.message,
                    d.hint.as_ref().map(|h| format!(" ({h})")).unwrap_or_default()
                )
            })
            .collect();
        (task, messages)
    }

    #[test]
    fn a_key_of_another_kind_names_its_owner() {
        let (_, messages) = decode_task("id: t\nkind: transform\nsql: SELECT 1\npartition_by: [a]\n");
        assert_eq!(
            messages,
            vec!["4:1 `partition_by` is not a key of transform tasks (`partition_by` belongs to load tasks)"]
        );
    }

    #[test]
    fn unknown_kind_gets_a_suggestion() {
        let (_, messages) = decode_task("id: t\nkind: transfrom\nsql: SELECT 1\n");
        assert_eq!(messages, vec!["2:7 unknown task kind `transfrom` (did you mean `transform`?)"]);
    }

    #[test]
    fn missing_parameters_are_all_reported() {
        let (_, messages) = decode_task("id: t\nkind: extract\n");
        assert_eq!(
            messages,
            vec![
                "1:1 missing required key `path` in task `t`",
                "1:1 missing required key `format` in task `t`",
                "1:1 missing required key `schema` in task `t`",
            ]
        );
    }

    #[test]
    fn checks_decode_each_form() {
        let text = "id: c\nkind: quality_check\ntable: songs\nchecks:\n  - not_null: song_id\n  - unique: [a, b]\n    severity: warn\n  - row_count: {min: 1}\n  - relationships: {column: song_id, to: songs, field: song_id}\n";
        let (task, messages) = decode_task(text);
        assert!(messages.is_empty(), "{messages:?}");
        let TaskParams::QualityCheck(q) = task.unwrap().params else { panic!("a quality check") };
        assert_eq!(q.checks.len(), 4);
        assert!(matches!(&q.checks[1].check, CheckKindSpec::Unique(c) if c.len() == 2));
        assert_eq!(q.checks[1].severity.as_ref().unwrap().value, CheckSeverity::Warn);
    }

    #[test]
    fn a_check_with_two_check_keys_is_rejected() {
        let text = "id: c\nkind: quality_check\ntable: songs\nchecks:\n  - not_null: a\n    unique: a\n";
        let (_, messages) = decode_task(text);
        assert_eq!(
            messages,
            vec![
                "6:5 a check has one check key, this one has not_null and unique (write each check as its own list item)"
            ]
        );
    }
}
