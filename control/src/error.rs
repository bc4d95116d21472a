//! The control crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in the control plane.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("{file}: {cause}")]
    Io {
        /// The file.
        file: PathBuf,
        /// The cause.
        cause: std::io::Error,
    },
    /// A policy, model or case file is invalid: syntax, unknown field, bad value.
    #[error("{file}:{line}: {field}: {msg}")]
    Invalid {
        /// The file (or `<input>` for in-memory text).
        file: String,
        /// 1-based line (0 when unknown).
        line: usize,
        /// The field path, e.g. `spec.ingress[0].ports[1].endPort`.
        field: String,
        /// What is wrong.
        msg: String,
    },
    /// A policy kind this crate does not translate.
    #[error("{file}:{line}: unsupported kind `{kind}` (apiVersion {api}): {hint}")]
    Unsupported {
        /// The file.
        file: String,
        /// Line of the document.
        line: usize,
        /// `kind` of the document.
        kind: String,
        /// `apiVersion` of the document.
        api: String,
        /// What to do instead.
        hint: String,
    },
    /// A workload name on the command line or in a case is not in the model.
    #[error("unknown workload `{0}`")]
    UnknownWorkload(String),
    /// A namespace is not in the model.
    #[error("unknown namespace `{0}`")]
    UnknownNamespace(String),
    /// A command-line argument is malformed.
    #[error("bad argument {arg}: {msg}")]
    BadArg {
        /// The argument.
        arg: String,
        /// What is wrong.
        msg: String,
    },
    /// The identity space is exhausted.
    #[error("identity space exhausted")]
    IdentitiesExhausted,
    /// The datastore (state file or etcd) failed or holds bad data.
    #[error("datastore: {0}")]
    Datastore(String),
    /// Writing command output failed.
    #[error("output: {0}")]
    Output(#[from] std::io::Error),
}

impl Error {
    /// Builds an [`Error::Invalid`].
    pub fn invalid(
        file: &str,
        line: usize,
        field: impl Into<String>,
        msg: impl Into<String>,
    ) -> Self {
        Error::Invalid {
            file: file.to_string(),
            line,
            field: field.into(),
            msg: msg.into(),
        }
    }

    /// The process exit code a command should use for this error: 2 for invalid
    /// input (files, arguments), 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Invalid { .. } | Error::Unsupported { .. } | Error::BadArg { .. } => 2,
            Error::UnknownWorkload(_) | Error::UnknownNamespace(_) => 2,
            _ => 1,
        }
    }
}

/// The control crate's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Converts a serde_yaml error into [`Error::Invalid`] with the file, line and field path.
pub(crate) fn from_yaml(file: &str, line_base: usize, e: &serde_yaml::Error) -> Error {
    let line = e
        .location()
        .map(|l| l.line() + line_base)
        .unwrap_or(line_base.max(1));
    let full = e.to_string();
    // serde_yaml renders "path.to.field: message at line L column C".
    let body = match full.rfind(" at line ") {
        Some(i) => &full[..i],
        None => &full[..],
    };
    let (mut field, mut msg) = split_path(body);
    // Validation messages name their own field first ("endPort: ...").
    if let Some((f, rest)) = msg.split_once(": ") {
        if !f.is_empty() && f.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            field = if field == "-" {
                f.to_string()
            } else {
                format!("{field}.{f}")
            };
            msg = rest.to_string();
        }
    }
    Error::Invalid {
        file: file.to_string(),
        line,
        field,
        msg,
    }
}

/// Converts a toml error into [`Error::Invalid`].
pub(crate) fn from_toml(file: &str, text: &str, e: &toml::de::Error) -> Error {
    let line = e
        .span()
        .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
        .unwrap_or(0);
    let msg = e.message().trim().to_string();
    let field = e
        .span()
        .and_then(|s| key_before(text, s.start))
        .unwrap_or_else(|| "-".to_string());
    Error::Invalid {
        file: file.to_string(),
        line,
        field,
        msg,
    }
}

/// The key on the line holding byte `at` (TOML `key = value` or `[table]`).
fn key_before(text: &str, at: usize) -> Option<String> {
    let at = at.min(text.len());
    let start = text[..at].rfind('\n').map(|i| i + 1).unwrap_or(0);
    let end = text[at..].find('\n').map(|i| at + i).unwrap_or(text.len());
    let line = text[start..end].trim();
    if let Some(eq) = line.find('=') {
        let k = line[..eq].trim().trim_start_matches('{').trim();
        // Inline tables: take the key nearest before the error position.
        let upto = &text[start..at];
        if let Some(eq2) = upto.rfind('=') {
            let seg = &upto[..eq2];
            let k2 = seg.rsplit(['{', ',', '[']).next().unwrap_or("").trim();
            if !k2.is_empty() {
                return Some(k2.to_string());
            }
        }
        return Some(k.to_string());
    }
    let t = line.trim_matches(|c| c == '[' || c == ']');
    (!t.is_empty()).then(|| t.to_string())
}

fn split_path(body: &str) -> (String, String) {
    if let Some(i) = body.find(": ") {
        let p = &body[..i];
        if !p.is_empty() && !p.contains(' ') {
            return (p.to_string(), body[i + 2..].to_string());
        }
    }
    ("-".to_string(), body.to_string())
}
