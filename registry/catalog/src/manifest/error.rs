//! Why a manifest is refused: each problem as a [`FieldError`] (path, value, what is
//! allowed), all of them together in a [`ManifestError`].

use std::fmt;

use serde::Serialize;

/// One problem in a manifest: where, what was found, and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// Field path such as `app.container.ports[0].host`.
    pub path: String,
    /// The offending value as written (shortened when long).
    pub value: String,
    /// What is allowed, or why the value is refused.
    pub allowed: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.value.is_empty() {
            write!(f, "{}: {}", self.path, self.allowed)
        } else {
            write!(
                f,
                "{}: {} is not allowed: {}",
                self.path, self.value, self.allowed
            )
        }
    }
}

/// Why a manifest was refused: one or more [`FieldError`]s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ManifestError {
    /// Where the manifest came from (file path or "announcement ..."), if known.
    pub source_name: Option<String>,
    pub errors: Vec<FieldError>,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        match &self.source_name {
            Some(src) => write!(f, "{src}: invalid manifest ({n} problem{})", plural(n))?,
            None => write!(f, "invalid manifest ({n} problem{})", plural(n))?,
        }
        for e in &self.errors {
            write!(f, "\n  - {e}")?;
        }
        Ok(())
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

impl ManifestError {
    pub(super) fn single(
        path: impl Into<String>,
        value: impl Into<String>,
        allowed: impl Into<String>,
    ) -> Self {
        Self {
            source_name: None,
            errors: vec![FieldError {
                path: path.into(),
                value: value.into(),
                allowed: allowed.into(),
            }],
        }
    }

    /// Names where the manifest came from, for messages.
    pub fn with_source(mut self, name: impl Into<String>) -> Self {
        self.source_name = Some(name.into());
        self
    }
}
