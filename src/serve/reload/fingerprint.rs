//! Content fingerprints of the reloadable inputs.
//!
//! Files are read through their paths, so symlinks are followed: a Kubernetes ConfigMap
//! mount (`policy.cedar → ..data/policy.cedar`, `..data → ..2024_…`) changes fingerprint
//! exactly when the atomic `..data` swap changes what the files say — never on a mere
//! mtime or symlink change, and never half-way through a swap.

use crate::config::PolicyPaths;
use crate::policy::load::cedar_files;
use sha2::{Digest, Sha256};
use std::path::Path;

/// SHA-256 over the inputs' paths and contents (or their read errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint([u8; 32]);

/// Hashes the config text (when reloading from a file) and every file `paths` names:
/// schema, entities, and each `*.cedar` of the policy and shadow directories.
pub fn of(config_text: Option<&[u8]>, paths: Option<&PolicyPaths>) -> Fingerprint {
    let mut h = Sha256::new();
    if let Some(text) = config_text {
        feed(&mut h, "config", Ok(text.to_vec()));
    }
    if let Some(paths) = paths {
        policy_files(&mut h, paths);
    }
    Fingerprint(h.finalize().into())
}

fn policy_files(h: &mut Sha256, paths: &PolicyPaths) {
    file(h, &paths.schema);
    if let Some(entities) = &paths.entities {
        file(h, entities);
    }
    dir(h, &paths.dir);
    if let Some(shadow) = &paths.shadow_dir {
        h.update(b"shadow\0");
        dir(h, shadow);
    }
}

fn feed(h: &mut Sha256, name: &str, content: std::io::Result<Vec<u8>>) {
    h.update(name.as_bytes());
    h.update([0]);
    match content {
        Ok(bytes) => {
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(&bytes);
        }
        Err(e) => {
            h.update(b"\xffunreadable:");
            h.update(e.kind().to_string().as_bytes());
        }
    }
}

fn file(h: &mut Sha256, path: &Path) {
    feed(h, &path.to_string_lossy(), std::fs::read(path));
}

fn dir(h: &mut Sha256, path: &Path) {
    match cedar_files(path) {
        Ok(files) => files.iter().for_each(|f| file(h, f)),
        Err(e) => feed(
            h,
            &path.to_string_lossy(),
            Err(std::io::Error::other(e.to_string())),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn paths(dir: &Path) -> PolicyPaths {
        PolicyPaths {
            dir: dir.join("p"),
            schema: dir.join("p/s.cedarschema"),
            entities: None,
            shadow_dir: None,
        }
    }

    #[test]
    fn content_changes_change_the_fingerprint_and_nothing_else_does() -> std::io::Result<()> {
        let tmp = tempfile::tempdir()?;
        std::fs::create_dir(tmp.path().join("p"))?;
        std::fs::write(tmp.path().join("p/s.cedarschema"), "entity A;")?;
        std::fs::write(
            tmp.path().join("p/a.cedar"),
            "permit(principal,action,resource);",
        )?;
        let p = paths(tmp.path());
        let first = of(Some(b"cfg"), Some(&p));
        assert_eq!(first, of(Some(b"cfg"), Some(&p)), "stable");
        std::fs::write(tmp.path().join("p/notes.txt"), "ignored")?;
        assert_eq!(
            first,
            of(Some(b"cfg"), Some(&p)),
            "non-policy files are ignored"
        );
        assert_ne!(first, of(Some(b"cfg2"), Some(&p)), "config text counts");
        std::fs::write(
            tmp.path().join("p/a.cedar"),
            "forbid(principal,action,resource);",
        )?;
        assert_ne!(first, of(Some(b"cfg"), Some(&p)), "policy content counts");
        Ok(())
    }

    #[test]
    fn missing_files_hash_without_failing() {
        let p = paths(&PathBuf::from("/nonexistent/riskgate"));
        assert_eq!(of(None, Some(&p)), of(None, Some(&p)));
    }
}
