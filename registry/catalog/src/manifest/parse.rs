//! Reading manifest text (YAML or JSON) into the model, with type errors that name the
//! field path, and reading the one field value with its own syntax, memory sizes.

use super::{AppManifest, ManifestDocument, ManifestError};

/// Largest manifest accepted, in bytes (endless-data defence for parsers).
pub const MAX_MANIFEST_BYTES: usize = 256 * 1024;
/// The text format of a manifest file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestFormat {
    Yaml,
    Json,
}

impl ManifestFormat {
    /// Picks the format from a file name: `.json` is JSON, everything else YAML
    /// (YAML is a superset of JSON, so this only matters for error messages).
    pub fn from_path(path: &std::path::Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some("json") => ManifestFormat::Json,
            _ => ManifestFormat::Yaml,
        }
    }
}

/// Parses a manifest (without validating it). Type errors name the field path.
pub fn parse(text: &str, format: ManifestFormat) -> Result<AppManifest, ManifestError> {
    if text.len() > MAX_MANIFEST_BYTES {
        return Err(ManifestError::single(
            "app",
            format!("{} bytes", text.len()),
            format!("a manifest is at most {MAX_MANIFEST_BYTES} bytes"),
        ));
    }
    let doc: Result<ManifestDocument, (String, String)> = match format {
        ManifestFormat::Json => {
            let de = &mut serde_json::Deserializer::from_str(text);
            serde_path_to_error::deserialize(de)
                .map_err(|e| (e.path().to_string(), e.inner().to_string()))
        }
        ManifestFormat::Yaml => {
            let de = serde_yaml_ng::Deserializer::from_str(text);
            serde_path_to_error::deserialize(de)
                .map_err(|e| (e.path().to_string(), e.inner().to_string()))
        }
    };
    match doc {
        Ok(doc) => Ok(doc.app),
        Err((path, msg)) => {
            let path = if path == "." || path.is_empty() {
                "(document)".to_string()
            } else {
                path
            };
            Err(ManifestError::single(
                path,
                "",
                format!("cannot parse: {msg}"),
            ))
        }
    }
}

/// Parses and validates in one step.
pub fn parse_and_validate(
    text: &str,
    format: ManifestFormat,
) -> Result<AppManifest, ManifestError> {
    let m = parse(text, format)?;
    m.validate()?;
    Ok(m)
}

/// Why a memory limit is not a size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidMemorySize {
    #[error("a size like 512m or 1g")]
    NotASize,
    #[error("a size that fits in 64 bits")]
    TooLarge,
}

/// Parses a memory size `512m`, `1g`, `64k` or plain bytes.
pub fn parse_memory(s: &str) -> Result<u64, InvalidMemorySize> {
    let s = s.trim().to_ascii_lowercase();
    let s = s.strip_suffix('b').unwrap_or(&s).to_string();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| InvalidMemorySize::NotASize)?;
    let mul: u64 = match unit {
        "" => 1,
        "k" | "ki" => 1 << 10,
        "m" | "mi" => 1 << 20,
        "g" | "gi" => 1 << 30,
        _ => return Err(InvalidMemorySize::NotASize),
    };
    n.checked_mul(mul).ok_or(InvalidMemorySize::TooLarge)
}
