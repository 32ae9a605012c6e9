//! Tests of parsing, validation and normalisation together, on the issue's minimal
//! manifest and variations of it.

use super::*;
use crate::hash::ContentHash;

const HELLO: &str = r#"
app:
  id: org.example.hello
  name: Hello
  version: 1.0.0
  description: { short: "A tiny web server" }
  container:
    image: ./hello.oci.tar
    cmd: ["/bin/busybox", "httpd", "-f", "-p", "8080"]
    ports: [{ host: 18080, container: 8080 }]
  health_check: { type: http, port: 8080, path: / }
"#;

fn hello() -> AppManifest {
    parse_and_validate(HELLO, ManifestFormat::Yaml).expect("the issue's minimal manifest validates")
}

fn errors_of(m: &AppManifest) -> Vec<FieldError> {
    m.validate().expect_err("should be refused").errors
}

fn has(errors: &[FieldError], path: &str) -> bool {
    errors.iter().any(|e| e.path == path)
}

#[test]
fn minimal_manifest_from_the_issue_validates() {
    let m = hello();
    assert_eq!(m.id, "org.example.hello");
    assert_eq!(m.container.ports[0].protocol, Protocol::Tcp);
}

#[test]
fn json_and_yaml_parse_to_the_same_manifest() {
    let m = hello();
    let json = serde_json::to_string(&ManifestDocument { app: m.clone() }).unwrap();
    assert_eq!(parse_and_validate(&json, ManifestFormat::Json).unwrap(), m);
}

#[test]
fn type_errors_name_the_field_path() {
    let bad = HELLO.replace("host: 18080", "host: eighty");
    let e = parse(&bad, ManifestFormat::Yaml).unwrap_err();
    assert_eq!(e.errors[0].path, "app.container.ports[0].host", "{e}");
}

#[test]
fn unknown_fields_are_refused_with_their_path() {
    let bad = HELLO.replace("name: Hello", "name: Hello\n  colour: red");
    let e = parse(&bad, ManifestFormat::Yaml).unwrap_err();
    assert!(e.to_string().contains("colour"), "{e}");
}

#[test]
fn security_policy_refuses_privileged_host_namespaces_binds_and_sockets() {
    let mut m = hello();
    m.container.privileged = Some(true);
    m.container.network_mode = Some("host".into());
    m.container.pid_mode = Some("host".into());
    m.container.volumes = vec![
        Volume {
            name: "etc".into(),
            target: "/data".into(),
            source: Some("/etc".into()),
            readonly: None,
        },
        Volume {
            name: "sock".into(),
            target: "/var/lib/docker.sock".into(),
            source: None,
            readonly: None,
        },
        Volume {
            name: "esc".into(),
            target: "/x".into(),
            source: Some("../../other-app".into()),
            readonly: None,
        },
        // A runtime reads `:` and `,` as option separators: `/etc:ro` would pass
        // the forbidden-target list as text and then mount over /etc.
        Volume {
            name: "opt".into(),
            target: "/etc:ro".into(),
            source: Some("a,b".into()),
            readonly: None,
        },
    ];
    m.container.capabilities_add = vec!["SYS_ADMIN".into(), "cap_net_bind_service".into()];
    let errs = errors_of(&m);
    for path in [
        "app.container.privileged",
        "app.container.network_mode",
        "app.container.pid_mode",
        "app.container.volumes[0].source",
        "app.container.volumes[1].target",
        "app.container.volumes[2].source",
        "app.container.volumes[3].target",
        "app.container.volumes[3].source",
        "app.container.capabilities_add[0]",
    ] {
        assert!(has(&errs, path), "missing {path} in {errs:#?}");
    }
    assert!(
        !has(&errs, "app.container.capabilities_add[1]"),
        "NET_BIND_SERVICE is allowed"
    );
}

#[test]
fn ports_outside_the_allow_list_are_refused() {
    let mut m = hello();
    m.container.ports = vec![
        PortMapping {
            host: 80,
            container: 80,
            protocol: Protocol::Tcp,
        },
        PortMapping {
            host: 7420,
            container: 1,
            protocol: Protocol::Tcp,
        },
        PortMapping {
            host: 18080,
            container: 8080,
            protocol: Protocol::Tcp,
        },
        PortMapping {
            host: 18080,
            container: 8081,
            protocol: Protocol::Tcp,
        },
    ];
    let errs = errors_of(&m);
    assert!(has(&errs, "app.container.ports[0].host"));
    assert!(has(&errs, "app.container.ports[1].host"));
    assert!(has(&errs, "app.container.ports[3].host"));
    assert!(!has(&errs, "app.container.ports[2].host"));
}

#[test]
fn errors_name_path_value_and_what_is_allowed() {
    let mut m = hello();
    m.id = "Hello World".into();
    m.version = "one".into();
    let errs = errors_of(&m);
    let id = errs.iter().find(|e| e.path == "app.id").unwrap();
    assert!(id.value.contains("Hello World"));
    assert!(id.allowed.contains("reverse-DNS"));
    assert!(has(&errs, "app.version"));
    let text = ManifestError {
        source_name: Some("x.yaml".into()),
        errors: errs,
    }
    .to_string();
    assert!(
        text.starts_with("x.yaml: invalid manifest (2 problems)"),
        "{text}"
    );
}

#[test]
fn catalog_entries_require_a_content_hash() {
    let m = hello();
    let e = m.validate_with(ImageField::Hash).unwrap_err();
    assert!(has(&e.errors, "app.container.image"));
    let mut m2 = m.clone();
    m2.container.image = ContentHash::of(b"img").to_string();
    m2.validate_with(ImageField::Hash).unwrap();
    assert_eq!(m2.image_hash(), Some(ContentHash::of(b"img")));
}

#[test]
fn health_checks_are_checked() {
    let mut m = hello();
    m.health_check = Some(HealthCheck {
        kind: HealthCheckKind::Http,
        port: Some(9999),
        path: Some("nope".into()),
        command: None,
        interval: Some("ten".into()),
        timeout: None,
        retries: Some(0),
        start_period: None,
    });
    let errs = errors_of(&m);
    for p in [
        "app.health_check.port",
        "app.health_check.path",
        "app.health_check.interval",
        "app.health_check.retries",
    ] {
        assert!(has(&errs, p), "missing {p}");
    }
}

#[test]
fn secrets_and_dependencies_are_checked() {
    let mut m = hello();
    m.generated_secrets = vec![
        GeneratedSecret {
            name: "DB_PASS".into(),
            kind: SecretKind::Password,
        },
        GeneratedSecret {
            name: "DB_PASS".into(),
            kind: SecretKind::Hex32,
        },
        GeneratedSecret {
            name: "9bad".into(),
            kind: SecretKind::Hex32,
        },
    ];
    m.dependencies = vec![
        Dependency {
            app_id: "org.example.hello".into(),
            version_req: None,
        },
        Dependency {
            app_id: "org.example.db".into(),
            version_req: Some("not a req".into()),
        },
    ];
    let errs = errors_of(&m);
    for p in [
        "app.generated_secrets[1].name",
        "app.generated_secrets[2].name",
        "app.dependencies[0].app_id",
        "app.dependencies[1].version_req",
    ] {
        assert!(has(&errs, p), "missing {p}");
    }
}

#[test]
fn normalisation_fills_defaults_and_hash_is_stable() {
    let m = hello();
    let n = m.normalized();
    let hc = n.health_check.as_ref().unwrap();
    assert_eq!(hc.interval.as_deref(), Some("10s"));
    assert_eq!(n.container.readonly_root, Some(false));
    assert_eq!(
        m.manifest_hash(),
        n.manifest_hash(),
        "normalising is idempotent"
    );
    let mut changed = m.clone();
    changed.container.env.insert("A".into(), "1".into());
    assert_ne!(m.manifest_hash(), changed.manifest_hash());
}

#[test]
fn oversized_manifest_is_refused_before_parsing() {
    let big = "a".repeat(MAX_MANIFEST_BYTES + 1);
    let e = parse(&big, ManifestFormat::Yaml).unwrap_err();
    assert!(e.to_string().contains("at most"));
}

#[test]
fn memory_sizes_parse() {
    assert_eq!(parse_memory("512m").unwrap(), 512 << 20);
    assert_eq!(parse_memory("1G").unwrap(), 1 << 30);
    assert!(parse_memory("lots").is_err());
}
