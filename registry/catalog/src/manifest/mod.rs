//! App manifests: parsing, strict validation and normalisation.
//!
//! A manifest is the developer's description of one app release (YAML or JSON, root key
//! `app`). The same validator runs in `catalog-signer catalog build`, in `archy app
//! validate`, on marketplace announcements and in the node before anything is applied,
//! so a manifest that passes here is safe to hand to a runtime: no privileged mode, no
//! host namespaces, no mounts outside the app's own data dir, no runtime socket, and only
//! allow-listed ports and capabilities.
//!
//! Every problem is reported as a [`FieldError`] naming the field path, the bad value and
//! what is allowed; validation collects all problems rather than stopping at the first.
//!
//! By role: the data model in `model.rs`, reading text in `parse.rs`, the
//! validator and security policy in `validate.rs`, errors in `error.rs`.

mod error;
mod model;
mod parse;
mod validate;

pub use error::{FieldError, ManifestError};
pub use model::{
    AppManifest, Author, Container, Dependency, Description, GeneratedSecret, HealthCheck,
    HealthCheckKind, HealthTiming, ManifestDocument, PortMapping, Protocol, Resources, SecretKind,
    Volume, DEFAULT_PIDS_LIMIT,
};
pub use parse::{
    parse, parse_and_validate, parse_memory, InvalidMemorySize, ManifestFormat, MAX_MANIFEST_BYTES,
};
pub use validate::{
    is_valid_app_id, ImageField, ALLOWED_CAPABILITIES, MIN_HOST_PORT, RESERVED_HOST_PORTS,
};

#[cfg(test)]
mod tests;
