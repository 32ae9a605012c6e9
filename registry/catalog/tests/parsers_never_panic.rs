//! Property tests: malformed input to every parser gives an error, never a panic.
//!
//! Inputs are random bytes, random text, and valid documents with random bytes flipped
//! or cut off, which reach much deeper into the parsers than pure noise. The same
//! entry points are exposed as `cargo fuzz` targets under `fuzz/`.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use archy_catalog::{
    documents::{Envelope, Role, RoleKeys, Roles, Root, SPEC_VERSION},
    keys::{KeyMap, SecretKey},
    manifest::{self, ManifestFormat},
    oci, Limits, TrustedState,
};
use proptest::prelude::*;

const HELLO: &str = r#"app:
  id: org.example.hello
  name: Hello
  version: 1.0.0
  description: { short: "A tiny web server" }
  container:
    image: ./hello.oci.tar
    cmd: ["/bin/busybox", "httpd", "-f", "-p", "8080"]
    ports: [{ host: 18080, container: 8080 }]
    volumes: [{ name: data, target: /data }]
  health_check: { type: http, port: 8080, path: / }
"#;

fn root_bytes() -> Vec<u8> {
    let k = SecretKey::from_seed(&[7; 32]);
    let one = RoleKeys {
        keyids: vec![k.key_id()],
        threshold: 1,
    };
    let root = Root {
        role: Role::Root,
        spec_version: SPEC_VERSION,
        version: 1,
        expires: chrono::Utc::now() + chrono::Duration::days(1),
        keys: KeyMap::from([(k.key_id(), k.public())]),
        roles: Roles {
            root: one.clone(),
            catalog: one.clone(),
            timestamp: one,
        },
    };
    let mut env = Envelope::new_unsigned(&root).unwrap();
    env.sign(&k);
    env.to_bytes()
}

fn mutate(base: &[u8], flips: &[(usize, u8)], cut: usize) -> Vec<u8> {
    let mut v = base.to_vec();
    for &(i, b) in flips {
        let n = v.len();
        if n > 0 {
            v[i % n] = b;
        }
    }
    v.truncate(cut % (v.len() + 1));
    v
}

fn feed_all(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    let _ = manifest::parse_and_validate(&text, ManifestFormat::Yaml);
    let _ = manifest::parse_and_validate(&text, ManifestFormat::Json);
    let _ = Envelope::from_slice(bytes).map(|e| (e.header().is_ok(), e.signing_message()));
    let _ = TrustedState::bootstrap(bytes, &Limits::default());
    let _ = oci::inspect_reader(bytes);
    if let Ok(mut s) = TrustedState::bootstrap(&root_bytes(), &Limits::default()) {
        let now = chrono::Utc::now();
        let _ = s.update_root(bytes, &Limits::default());
        let _ = s.verify_timestamp(bytes, now, &Limits::default());
        let _ = s.verify_catalog(bytes, None, now, &Limits::default());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        feed_all(&bytes);
    }

    #[test]
    fn mutated_manifests_never_panic(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6), cut in any::<usize>()) {
        let bytes = mutate(HELLO.as_bytes(), &flips, cut);
        feed_all(&bytes);
    }

    #[test]
    fn mutated_roots_never_panic(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6), cut in any::<usize>()) {
        let bytes = mutate(&root_bytes(), &flips, cut);
        feed_all(&bytes);
    }

    #[test]
    fn mutated_root_is_never_accepted_with_changed_signed_bytes(i in any::<usize>(), b in any::<u8>()) {
        let base = root_bytes();
        let env = Envelope::from_slice(&base).unwrap();
        let signed = env.signed.get().as_bytes().to_vec();
        let start = base.windows(signed.len()).position(|w| w == signed.as_slice()).unwrap();
        let at = start + i % signed.len();
        prop_assume!(base[at] != b);
        let mut bytes = base.clone();
        bytes[at] = b;
        if let Ok(s) = TrustedState::bootstrap(&bytes, &Limits::default()) {
            // Only whitespace inside `signed` could change without breaking JSON, and
            // even that breaks the signature: nothing altered may verify.
            prop_assert!(false, "altered root accepted: {:?}", s.root_version);
        }
    }
}
