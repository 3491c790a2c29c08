//! Variables: `${name}` from `vars` (overridable with `--set name=value`), `${env:NAME}` and
//! `${env:NAME:-default}` from the environment, and the built-in `${pipeline_dir}`. `$${` writes a
//! literal `${`.
//!
//! Variable values may refer to other variables and to the environment; a reference loop is an
//! error naming the whole chain. `--set` values are taken literally. Expansion applies to every
//! string value in `defaults` and `tasks` (never to keys).

use std::collections::BTreeMap;

use crate::diagnostic::{Diagnostic, Pos, SourceFile, suggestion};
use crate::redact::register;
use crate::yaml::{Node, Value};

/// Built-in variables that need no declaration.
pub(crate) const BUILTIN_VARS: &[&str] = &["pipeline_dir"];

/// Where variable values come from, besides the pipeline file.
#[derive(Clone, Default)]
pub struct VarInputs {
    /// `--set KEY=VALUE` overrides, in command-line order.
    pub overrides: Vec<(String, String)>,
    /// Built-in values (`pipeline_dir`).
    pub builtins: BTreeMap<String, String>,
    /// Environment lookup; `None` means the process environment.
    pub env: Option<BTreeMap<String, String>>,
}

impl VarInputs {
    fn env_var(&self, name: &str) -> Option<String> {
        match &self.env {
            Some(map) => map.get(name).cloned(),
            None => std::env::var(name).ok(),
        }
    }

    /// `${env:NAME}` or `${env:NAME:-default}`: the variable, the default, or an explained error.
    /// A value taken from the environment is registered as a secret (see [`crate::redact`])
    /// unless `secret` is `false` (the variable it feeds was declared `secret: false`).
    fn env_value(&self, name: &str, default: Option<&str>, secret: bool) -> Result<String, (String, Option<String>)> {
        if let Some(value) = self.env_var(name) {
            if secret {
                register(&value);
            }
            return Ok(value);
        }
        default.map(str::to_string).ok_or_else(|| {
            (
                format!("environment variable `{name}` is not set"),
                Some(format!("set it, or give a default: `${{env:{name}:-value}}`")),
            )
        })
    }
}

/// One reference inside a string: where it starts (byte offset in that string), its length, and what it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reference {
    Var(String),
    Env { name: String, default: Option<String> },
}

/// A problem found while expanding one string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExpandError {
    /// Byte offset of the `${` in the expanded string.
    pub offset: usize,
    /// Byte length of the whole `${...}` reference.
    pub len: usize,
    pub message: String,
    pub hint: Option<String>,
}

/// Expands every `${...}` in `text` with `lookup`, collecting every error.
pub(crate) fn expand(
    text: &str,
    mut lookup: impl FnMut(&Reference) -> Result<String, (String, Option<String>)>,
) -> Result<String, Vec<ExpandError>> {
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    let mut rest = text;
    let mut consumed = 0;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(escaped) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = escaped;
            consumed += i + 3;
            continue;
        }
        if !after.starts_with("${") {
            out.push('$');
            rest = &after[1..];
            consumed += i + 1;
            continue;
        }
        let offset = consumed + i;
        let Some(end) = after.find('}') else {
            errors.push(ExpandError {
                offset,
                len: after.len(),
                message: "unterminated `${`: expected `}`".into(),
                hint: Some("write `$${` for a literal `${`".into()),
            });
            rest = "";
            break;
        };
        let inner = &after[2..end];
        match parse_reference(inner) {
            Ok(reference) => match lookup(&reference) {
                Ok(value) => out.push_str(&value),
                Err((message, hint)) => errors.push(ExpandError { offset, len: end + 1, message, hint }),
            },
            Err(message) => errors.push(ExpandError { offset, len: end + 1, message, hint: None }),
        }
        rest = &after[end + 1..];
        consumed = offset + end + 1;
    }
    out.push_str(rest);
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}

fn parse_reference(inner: &str) -> Result<Reference, String> {
    if let Some(env) = inner.strip_prefix("env:") {
        let (name, default) = match env.split_once(":-") {
            Some((name, default)) => (name, Some(default.to_string())),
            None => (env, None),
        };
        if !is_identifier(name) {
            return Err(format!("invalid environment variable name `{name}` in `${{{inner}}}`"));
        }
        return Ok(Reference::Env { name: name.to_string(), default });
    }
    if !is_identifier(inner) {
        return Err(format!("invalid variable reference `${{{inner}}}`: expected `${{name}}` or `${{env:NAME}}`"));
    }
    Ok(Reference::Var(inner.to_string()))
}

pub(crate) fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A declared variable as written in the file.
#[derive(Debug, Clone)]
pub(crate) struct DeclaredVar {
    pub name: String,
    pub name_pos: Pos,
    /// `None` when declared without a value (`role: ~`): it must come from `--set`.
    pub raw: Option<String>,
    pub value_node: Option<Node>,
    /// `secret: true` or `false` when declared as a mapping; `None` when declared as a value.
    pub secret: Option<bool>,
}

/// The resolved variables of a pipeline.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vars {
    /// Name -> value; a declared variable without a value maps to `None`.
    pub values: BTreeMap<String, Option<String>>,
    /// Names set with `--set`.
    pub overridden: Vec<String>,
    /// Variables whose own value had an error (already reported): references stay quiet.
    pub failed: Vec<String>,
    /// Variables declared `secret: true`.
    pub secret: Vec<String>,
}

impl Vars {
    /// The value of variable `name`, if it is set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).and_then(|v| v.as_deref())
    }

    /// Whether variable `name` holds a secret: declared `secret: true`, or named like one (see
    /// [`is_secret_name`]).
    pub fn is_secret(&self, name: &str) -> bool {
        self.secret.iter().any(|s| s == name) || is_secret_name(name)
    }

    /// A variable's value for printing: secrets as `***`.
    pub fn shown(&self, name: &str) -> String {
        match self.values.get(name) {
            Some(Some(_)) if self.is_secret(name) => "***".into(),
            Some(Some(v)) => v.clone(),
            _ => "<unset>".into(),
        }
    }
}

/// Whether a variable holds a secret by its name (password, token, secret, credential, ...):
/// such values never appear in plans, logs or run records.
pub(crate) fn is_secret_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    ["secret", "password", "passwd", "token", "credential", "private_key", "api_key", "access_key"]
        .iter()
        .any(|s| lower.contains(s))
}

/// Resolves declared variables against overrides, builtins and the environment.
pub(crate) fn resolve(
    declared: &[DeclaredVar],
    inputs: &VarInputs,
    source: &SourceFile,
    diagnostics: &mut Vec<Diagnostic>,
) -> (Vars, Vec<String>) {
    let mut unknown_overrides = Vec::new();
    let declared_names: Vec<&str> = declared.iter().map(|v| v.name.as_str()).collect();
    for (name, _) in &inputs.overrides {
        if !declared_names.contains(&name.as_str()) && !BUILTIN_VARS.contains(&name.as_str()) {
            let hint = suggestion(name, declared_names.iter().copied());
            unknown_overrides.push(match hint {
                Some(h) => format!("--set {name}: the pipeline declares no variable `{name}`; {h}"),
                None => format!(
                    "--set {name}: the pipeline declares no variable `{name}` (declared: {})",
                    if declared_names.is_empty() { "none".to_string() } else { declared_names.join(", ") }
                ),
            });
        }
    }
    let mut resolver = Resolver {
        declared,
        inputs,
        source,
        done: BTreeMap::new(),
        failed: Vec::new(),
        stack: Vec::new(),
        diagnostics,
    };
    for var in declared {
        // Failures are recorded as diagnostics.
        let _ = resolver.resolve_var(&var.name);
    }
    let values = resolver.done.clone();
    let failed = resolver.failed.clone();
    let overridden = inputs.overrides.iter().map(|(k, _)| k.clone()).collect();
    let secret: Vec<String> = declared.iter().filter(|v| v.secret == Some(true)).map(|v| v.name.clone()).collect();
    let vars = Vars { values, overridden, failed, secret };
    // A secret's value is hidden wherever it ends up, whichever way it was set.
    for (name, value) in &vars.values {
        if let Some(value) = value
            && vars.is_secret(name)
        {
            register(value);
        }
    }
    (vars, unknown_overrides)
}

struct Resolver<'a> {
    declared: &'a [DeclaredVar],
    inputs: &'a VarInputs,
    source: &'a SourceFile,
    done: BTreeMap<String, Option<String>>,
    failed: Vec<String>,
    stack: Vec<String>,
    diagnostics: &'a mut Vec<Diagnostic>,
}

impl Resolver<'_> {
    fn resolve_var(&mut self, name: &str) -> Result<Option<String>, ()> {
        if self.failed.iter().any(|f| f == name) {
            return Err(());
        }
        if let Some(done) = self.done.get(name) {
            return Ok(done.clone());
        }
        if let Some((_, value)) = self.inputs.overrides.iter().rev().find(|(k, _)| k == name) {
            self.done.insert(name.to_string(), Some(value.clone()));
            return Ok(Some(value.clone()));
        }
        let Some(var) = self.declared.iter().find(|v| v.name == name) else {
            return Ok(self.inputs.builtins.get(name).cloned());
        };
        if self.stack.iter().any(|s| s == name) {
            let start = self.stack.iter().position(|s| s == name).unwrap_or(0);
            let mut chain: Vec<&str> = self.stack[start..].iter().map(String::as_str).collect();
            chain.push(name);
            self.diagnostics.push(Diagnostic::error(
                Pos { len: var.name.len(), ..var.name_pos },
                format!("variables refer to each other in a loop: {}", chain.join(" -> ")),
            ));
            return Err(());
        }
        let Some(raw) = var.raw.clone() else {
            self.done.insert(name.to_string(), None);
            return Ok(None);
        };
        self.stack.push(name.to_string());
        let node = var.value_node.clone();
        let result = self.expand_at(&raw, node.as_ref());
        self.stack.pop();
        match result {
            Ok(value) => {
                self.done.insert(name.to_string(), Some(value.clone()));
                Ok(Some(value))
            }
            Err(()) => {
                self.failed.push(name.to_string());
                Err(())
            }
        }
    }

    fn expand_at(&mut self, raw: &str, node: Option<&Node>) -> Result<String, ()> {
        let mut failed_silently = false;
        // The environment's values are secrets unless the variable they feed says otherwise.
        let secret = self
            .stack
            .last()
            .and_then(|current| self.declared.iter().find(|v| &v.name == current))
            .is_none_or(|v| v.secret != Some(false));
        let result = expand(raw, |reference| match reference {
            Reference::Env { name, default } => self.inputs.env_value(name, default.as_deref(), secret),
            Reference::Var(name) => match self.resolve_var(name) {
                Ok(Some(value)) => Ok(value),
                Ok(None) if self.declared.iter().any(|v| &v.name == name) => {
                    Err((format!("variable `{name}` has no value"), Some(format!("pass `--set {name}=...`"))))
                }
                Ok(None) => Err(unknown_var_error(name, self.declared)),
                Err(()) => {
                    failed_silently = true;
                    Ok(String::new())
                }
            },
        });
        match result {
            Ok(value) if !failed_silently => Ok(value),
            Ok(_) => Err(()),
            Err(errors) => {
                for e in errors {
                    let pos = locate_in_scalar(self.source, node, raw, e.offset, e.len);
                    self.diagnostics.push(Diagnostic::error(pos, e.message).with_hint_opt(e.hint));
                }
                Err(())
            }
        }
    }
}

fn unknown_var_error(name: &str, declared: &[DeclaredVar]) -> (String, Option<String>) {
    let candidates = declared.iter().map(|v| v.name.as_str()).chain(BUILTIN_VARS.iter().copied());
    let hint = suggestion(name, candidates).or_else(|| {
        Some(format!(
            "declare it under `vars:`; known: {}",
            declared.iter().map(|v| v.name.as_str()).chain(BUILTIN_VARS.iter().copied()).collect::<Vec<_>>().join(", ")
        ))
    });
    (format!("unknown variable `{name}`"), hint)
}

/// The position of a reference that sits `offset` bytes into a scalar's value. When the source
/// text of the scalar contains the reference verbatim, that exact place is returned.
fn locate_in_scalar(source: &SourceFile, node: Option<&Node>, value: &str, offset: usize, len: usize) -> Pos {
    let Some(node) = node else {
        return Pos::UNKNOWN;
    };
    let reference = &value[offset..offset + len];
    if let Some(start) = node.pos.offset {
        let window_end = (start + node.pos.len.max(value.len() * 2 + 64)).min(source.text.len());
        if let Some(window) = source.text.get(start..window_end) {
            // The n-th occurrence of this reference text in the value is the n-th in the source.
            let nth = value[..offset].matches(reference).count();
            if let Some((found, _)) = window.match_indices(reference).nth(nth) {
                return source.pos_of_offset(start + found, len);
            }
        }
    }
    node.pos
}

/// Expands references in every string of `node` (recursively), reporting problems at their place.
pub(crate) fn interpolate_tree(
    node: &mut Node,
    vars: &Vars,
    declared: &[DeclaredVar],
    inputs: &VarInputs,
    source: &SourceFile,
    diagnostics: &mut Vec<Diagnostic>,
) {
    match &mut node.value {
        Value::Str(text) if text.contains('$') => {
            let original = text.clone();
            let result = expand(&original, |reference| match reference {
                Reference::Env { name, default } => inputs.env_value(name, default.as_deref(), true),
                Reference::Var(name) if vars.failed.contains(name) => Ok(String::new()),
                Reference::Var(name) => match vars.values.get(name.as_str()) {
                    Some(Some(value)) => Ok(value.clone()),
                    Some(None) => {
                        Err((format!("variable `{name}` has no value"), Some(format!("pass `--set {name}=...`"))))
                    }
                    None => match inputs.builtins.get(name.as_str()) {
                        Some(value) => Ok(value.clone()),
                        None => Err(unknown_var_error(name, declared)),
                    },
                },
            });
            match result {
                Ok(expanded) => *text = expanded,
                Err(errors) => {
                    let snapshot = Node { pos: node.pos, value: Value::Str(original.clone()) };
                    for e in errors {
                        let pos = locate_in_scalar(source, Some(&snapshot), &original, e.offset, e.len);
                        diagnostics.push(Diagnostic::error(pos, e.message).with_hint_opt(e.hint));
                    }
                }
            }
        }
        Value::Seq(items) => {
            for item in items {
                interpolate_tree(item, vars, declared, inputs, source, diagnostics);
            }
        }
        Value::Map(entries) => {
            for (_, value) in entries {
                interpolate_tree(value, vars, declared, inputs, source, diagnostics);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(reference: &Reference) -> Result<String, (String, Option<String>)> {
        match reference {
            Reference::Var(n) if n == "input" => Ok("data".into()),
            Reference::Env { default: Some(d), .. } => Ok(d.clone()),
            other => Err((format!("no {other:?}"), None)),
        }
    }

    #[test]
    fn expands_vars_env_defaults_and_escapes() {
        assert_eq!(expand("${input}/song_data", lookup).unwrap(), "data/song_data");
        assert_eq!(expand("${env:NOPE:-x}-$${input}-$5", lookup).unwrap(), "x-${input}-$5");
    }

    #[test]
    fn reports_each_bad_reference_with_its_offset() {
        let errors = expand("a ${nope} b ${in put} ${x", lookup).unwrap_err();
        let spans: Vec<_> = errors.iter().map(|e| (e.offset, e.len)).collect();
        assert_eq!(spans, vec![(2, 7), (12, 9), (22, 3)]);
        assert!(errors[1].message.contains("invalid variable reference"));
        assert!(errors[2].message.contains("unterminated"));
    }

    fn declared(name: &str, raw: &str) -> DeclaredVar {
        DeclaredVar {
            name: name.into(),
            name_pos: Pos { line: 1, col: 1, offset: None, len: 0 },
            raw: Some(raw.into()),
            secret: None,
            value_node: None,
        }
    }

    #[test]
    fn variables_refer_to_each_other_and_overrides_win() {
        let source = SourceFile::new("t.yaml", "");
        let vars =
            vec![declared("root", "/lake"), declared("output", "${root}/out"), declared("input", "${env:IN:-in}")];
        let inputs = VarInputs {
            overrides: vec![("root".into(), "/srv/x".into())],
            env: Some(BTreeMap::new()),
            ..Default::default()
        };
        let mut diags = Vec::new();
        let (resolved, unknown) = resolve(&vars, &inputs, &source, &mut diags);
        assert!(diags.is_empty() && unknown.is_empty());
        assert_eq!(resolved.get("output"), Some("/srv/x/out"));
        assert_eq!(resolved.get("input"), Some("in"));
    }

    #[test]
    fn a_reference_loop_names_the_chain() {
        let source = SourceFile::new("t.yaml", "");
        let vars = vec![declared("a", "${b}"), declared("b", "${c}"), declared("c", "${a}")];
        let mut diags = Vec::new();
        resolve(&vars, &VarInputs { env: Some(BTreeMap::new()), ..Default::default() }, &source, &mut diags);
        assert_eq!(diags.len(), 1);
        assert_eq!(diags[0].message, "variables refer to each other in a loop: a -> b -> c -> a");
    }

    #[test]
    fn secrets_are_recognised_by_name_and_never_shown() {
        assert!(
            is_secret_name("db_password") && is_secret_name("AWS_SECRET_ACCESS_KEY") && is_secret_name("api_token")
        );
        assert!(!is_secret_name("output") && !is_secret_name("kms_key_id"));
        let vars = Vars {
            values: BTreeMap::from([
                ("db_password".into(), Some("hunter2".into())),
                ("output".into(), Some("o".into())),
            ]),
            ..Default::default()
        };
        assert_eq!((vars.shown("db_password"), vars.shown("output")), ("***".into(), "o".into()));
    }

    #[test]
    fn unknown_override_suggests_a_declared_name() {
        let source = SourceFile::new("t.yaml", "");
        let inputs = VarInputs {
            overrides: vec![("ouptut".into(), "x".into())],
            env: Some(BTreeMap::new()),
            ..Default::default()
        };
        let (_, unknown) = resolve(&[declared("output", "o")], &inputs, &source, &mut Vec::new());
        assert_eq!(unknown, vec!["--set ouptut: the pipeline declares no variable `ouptut`; did you mean `output`?"]);
    }
}
