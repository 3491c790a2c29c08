//! Secrets are hidden by value, wherever they went: every value that came from the environment
//! through `${env:…}`, every value of a variable marked `secret: true` (or named like a secret:
//! see [`crate::vars`]), and the AWS credentials of the environment are registered here, and
//! everything dagrun prints or writes for people (logs, JSON logs, the dry run, errors, run.json,
//! JUnit, the HTML report, the job summary) passes through [`redact`] on its way out.
//!
//! A value is also hidden in the forms that JSON and HTML escaping give it, since run.json and the
//! report escape what they hold. Values shorter than [`MIN_SECRET_LEN`] characters are not
//! hidden by value (hiding `1` would garble every number); a variable that holds one is still
//! shown as `***` where variables are listed.

use std::borrow::Cow;
use std::sync::RwLock;

/// Shortest value hidden wherever it appears.
pub const MIN_SECRET_LEN: usize = 4;

/// What a hidden value is replaced with.
pub const MASK: &str = "***";

/// The registered values and their escaped forms, longest first (so a secret that contains
/// another is hidden whole).
static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Registers `value` as a secret for the rest of the process. Short values are ignored (see
/// [`MIN_SECRET_LEN`]).
pub fn register(value: &str) {
    if value.chars().count() < MIN_SECRET_LEN {
        return;
    }
    let mut forms = vec![value.to_string(), json_escaped(value), html_escaped(value)];
    forms.push(html_escaped(&json_escaped(value)));
    let mut secrets = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    for form in forms {
        if !secrets.contains(&form) {
            secrets.push(form);
        }
    }
    secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
}

/// Registers the AWS credentials found in the environment (the SDK's first source).
pub fn register_aws_environment() {
    for name in ["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID", "AWS_SECURITY_TOKEN"] {
        if let Ok(value) = std::env::var(name) {
            register(&value);
        }
    }
}

/// Registers the keys in the AWS shared credentials and config files (`AWS_SHARED_CREDENTIALS_FILE`
/// or `~/.aws/credentials`, `AWS_CONFIG_FILE` or `~/.aws/config`): the SDK's trace logs can name a
/// profile's key before the credentials chain hands it over, so they are hidden from the start.
pub fn register_aws_files() {
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
    let file = |var: &str, default: &str| {
        std::env::var_os(var)
            .map(std::path::PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".aws").join(default)))
    };
    for path in
        [file("AWS_SHARED_CREDENTIALS_FILE", "credentials"), file("AWS_CONFIG_FILE", "config")].into_iter().flatten()
    {
        if let Ok(text) = std::fs::read_to_string(&path) {
            for value in aws_file_secrets(&text) {
                register(value);
            }
        }
    }
}

/// The values of the keys an AWS shared file holds secrets in.
fn aws_file_secrets(text: &str) -> impl Iterator<Item = &str> {
    const KEYS: [&str; 4] = ["aws_access_key_id", "aws_secret_access_key", "aws_session_token", "aws_security_token"];
    text.lines().filter_map(|line| {
        let (key, value) = line.split_once('=')?;
        let key = key.trim().to_ascii_lowercase();
        KEYS.contains(&key.as_str()).then(|| value.trim()).filter(|v| !v.is_empty())
    })
}

/// Whether any secret is registered.
pub fn any() -> bool {
    !SECRETS.read().unwrap_or_else(|e| e.into_inner()).is_empty()
}

/// `text` with every registered secret replaced by `***`.
pub fn redact(text: &str) -> Cow<'_, str> {
    let secrets = SECRETS.read().unwrap_or_else(|e| e.into_inner());
    if secrets.iter().all(|s| !text.contains(s.as_str())) {
        return Cow::Borrowed(text);
    }
    let mut out = text.to_string();
    for secret in secrets.iter() {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), MASK);
        }
    }
    Cow::Owned(out)
}

/// `bytes` with every registered secret replaced, for output that is UTF-8 text (invalid UTF-8
/// passes through unchanged, with any secret in its valid parts hidden).
pub fn redact_bytes(bytes: &[u8]) -> Cow<'_, [u8]> {
    if !any() {
        return Cow::Borrowed(bytes);
    }
    let text = String::from_utf8_lossy(bytes);
    match redact(&text) {
        Cow::Borrowed(_) => Cow::Borrowed(bytes),
        Cow::Owned(hidden) => match std::str::from_utf8(bytes) {
            Ok(_) => Cow::Owned(hidden.into_bytes()),
            // Lossy decoding changed invalid bytes: hide secrets chunk by chunk instead.
            Err(_) => Cow::Owned(redact_invalid_utf8(bytes)),
        },
    }
}

fn redact_invalid_utf8(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.extend_from_slice(redact(chunk.valid()).as_bytes());
        out.extend_from_slice(chunk.invalid());
    }
    out
}

fn json_escaped(value: &str) -> String {
    let quoted = serde_json::to_string(value).unwrap_or_default();
    quoted.trim_matches('"').to_string()
}

fn html_escaped(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_keys_of_aws_shared_files_are_found() {
        let text = "[default]\naws_access_key_id = AKIAFILE1234\nAWS_Secret_Access_Key=s3cr3t/x\nregion = eu-west-1\n\
                    [profile x]\naws_session_token =tok\n";
        assert_eq!(aws_file_secrets(text).collect::<Vec<_>>(), ["AKIAFILE1234", "s3cr3t/x", "tok"]);
    }

    #[test]
    fn registered_values_are_hidden_in_plain_json_and_html_forms_and_short_ones_are_not() {
        register("s3cr<e>t\"pass");
        register("abc");
        let plain = redact("user=me pass=s3cr<e>t\"pass end abc");
        assert_eq!(plain, "user=me pass=*** end abc");
        let json = serde_json::to_string("s3cr<e>t\"pass").unwrap();
        assert_eq!(redact(&json), "\"***\"");
        assert_eq!(redact("s3cr&lt;e&gt;t&quot;pass"), "***");
        assert!(matches!(redact("nothing here"), Cow::Borrowed(_)));
        let mut bytes = b"\xff s3cr<e>t\"pass \xfe".to_vec();
        bytes = redact_bytes(&bytes).into_owned();
        assert_eq!(bytes, b"\xff *** \xfe");
    }
}
