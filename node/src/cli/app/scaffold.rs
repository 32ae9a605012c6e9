//! `archy app init`: a new app's folder, ready to pack, validate and publish.
//!
//! The folder holds a manifest that validates (checked before anything is written), a
//! root filesystem with a web page, a `Containerfile` for those who build with podman,
//! and a README with the steps. It appears whole or not at all: everything is written
//! to a temporary sibling that is renamed into place.

use std::{
    fs,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::Context;
use archy_catalog::manifest::{self, ManifestFormat};
use clap::Args;
use serde_json::json;

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The folder to create (it must not exist yet, or be empty).
    pub dir: PathBuf,
    /// The app id, reverse-DNS (default: org.example.<folder name>).
    #[arg(long)]
    pub id: Option<String>,
    /// The app's display name (default: the folder name).
    #[arg(long)]
    pub name: Option<String>,
    /// The host port the app's web server is published on.
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Print what was created as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What `archy app init` writes, file by file (paths relative to the app's folder).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scaffold {
    pub id: String,
    pub files: Vec<(PathBuf, String)>,
}

/// `dir`'s last component as an app id label: lowercase letters, digits and `-`.
fn slug(dir: &Path) -> String {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let s: String = name
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' => c,
            _ => '-',
        })
        .collect();
    let s = s.trim_matches('-').to_string();
    if s.is_empty() {
        "app".to_string()
    } else {
        s
    }
}

/// The files of a new app (pure: nothing is written). The manifest is validated.
pub fn scaffold(
    dir: &Path,
    id: Option<&str>,
    name: Option<&str>,
    port: u16,
) -> anyhow::Result<Scaffold> {
    let slug = slug(dir);
    let id = id.map_or_else(|| format!("org.example.{slug}"), str::to_string);
    anyhow::ensure!(
        manifest::is_valid_app_id(&id),
        "--id {id:?}: an app id is reverse-DNS, lowercase: org.example.{slug}"
    );
    let name = name.map_or_else(|| slug.clone(), str::to_string);
    let archive = format!("{slug}.oci.tar");
    let app_yaml = format!(
        r#"# The app's manifest: every field is explained in docs/app-developer-guide.md.
app:
  id: {id}
  name: {name:?}
  version: 0.1.0
  category: tools
  description:
    short: "{name}, a small web app"
  container:
    # The image archive `archy app pack` writes; `archy app publish` hashes it.
    image: ./{archive}
    cmd: [/bin/busybox, httpd, -f, -p, "8080", -h, /www]
    ports:
      - {{ host: {port}, container: 8080 }}
  health_check: {{ type: http, port: 8080, path: /, interval: 2s, timeout: 1s, retries: 5 }}
"#
    );
    manifest::parse_and_validate(&app_yaml, ManifestFormat::Yaml)
        .map_err(|e| anyhow::anyhow!("the scaffold's manifest does not validate: {e}"))?;
    let index = format!("<!doctype html>\n<title>{name}</title>\n<h1>Hello from {name}</h1>\n");
    let containerfile = format!(
        "# For those who build with podman (or docker):\n\
         #   podman build -t {slug} . && archy app pack --from podman:{slug} --out {archive}\n\
         FROM docker.io/library/busybox:stable\n\
         COPY rootfs/www /www\n\
         CMD [\"/bin/busybox\", \"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n"
    );
    let readme = format!(
        r#"# {name}

An Archy app. From this folder:

```sh
cp "$(command -v busybox)" rootfs/bin/busybox    # a static busybox (Debian: busybox-static)
archy app pack rootfs --out {archive} --name {slug}
archy app validate app.yaml
archy app render app.yaml                        # the container it becomes
archy key new --out dev.nsec                     # your developer key (keep it 0600)
archy node run --data ../dev-node &              # your node: it seeds your image
archy app publish app.yaml --key dev.nsec --relay ws://127.0.0.1:7447 --data ../dev-node
```

Built with podman instead? See `Containerfile`. The whole flow (updates, retracting,
rotating your key, earning endorsements) is in Archy's docs/app-developer-guide.md.
"#
    );
    Ok(Scaffold {
        id,
        files: vec![
            ("app.yaml".into(), app_yaml),
            ("rootfs/www/index.html".into(), index),
            ("rootfs/bin/.keep".into(), String::new()),
            ("Containerfile".into(), containerfile),
            ("README.md".into(), readme),
        ],
    })
}

pub fn init(args: InitArgs) -> anyhow::Result<ExitCode> {
    let dir = &args.dir;
    if dir.exists() {
        let empty = fs::read_dir(dir)
            .with_context(|| format!("{} exists and is not a folder", dir.display()))?
            .next()
            .is_none();
        anyhow::ensure!(
            empty,
            "{} exists and is not empty; give a new folder",
            dir.display()
        );
    }
    let s = scaffold(dir, args.id.as_deref(), args.name.as_deref(), args.port)?;
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(".archy-init-")
        .tempdir_in(&parent)
        .with_context(|| format!("cannot write in {}", parent.display()))?;
    for (rel, text) in &s.files {
        let path = tmp.path().join(rel);
        if let Some(d) = path.parent() {
            fs::create_dir_all(d)?;
        }
        fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if dir.exists() {
        fs::remove_dir(dir).with_context(|| format!("cannot replace {}", dir.display()))?;
    }
    fs::rename(tmp.keep(), dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let files: Vec<&PathBuf> = s.files.iter().map(|(p, _)| p).collect();
    if args.json {
        println!("{}", json!({"dir": dir, "id": s.id, "files": files}));
    } else {
        println!("created {} ({})", dir.display(), s.id);
        for f in files {
            println!("  {}", f.display());
        }
        println!("next: read {}", dir.join("README.md").display());
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_name_becomes_a_valid_id_and_a_bad_id_is_refused() {
        let s = scaffold(Path::new("/x/My Notes!"), None, None, 8080).expect("scaffold");
        assert_eq!(s.id, "org.example.my-notes");
        assert!(s.files.iter().any(|(p, _)| p == Path::new("app.yaml")));
        let e = scaffold(Path::new("a"), Some("Not An Id"), None, 8080).unwrap_err();
        assert!(e.to_string().contains("reverse-DNS"), "{e}");
        assert_eq!(slug(Path::new("---")), "app");
    }
}
