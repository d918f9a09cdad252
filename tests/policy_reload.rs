//! `PolicyWatch`: a policy held in memory follows edits of its file and
//! its lock; a broken edit never replaces the policy in force.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use scriptbox::policy::reload::PolicyWatch;
use scriptbox::policy::{PolicyLoadError, Severity};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A copy of `tests/policies/tiny.toml` and its lock in a fresh directory.
fn tiny_copy() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("tiny.toml");
    fs::copy(repo().join("tests/policies/tiny.toml"), &policy).unwrap();
    fs::copy(
        repo().join("tests/policies/tiny.lock"),
        dir.path().join("tiny.lock"),
    )
    .unwrap();
    (dir, policy)
}

/// Rewrites a file in place (same inode), as an editor without backups does.
fn rewrite(path: &Path, text: &str) {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn allows(watch: &PolicyWatch, name: &str) -> bool {
    watch.current().allowed(&name.parse().unwrap()).is_some()
}

#[test]
fn a_good_edit_is_picked_up_at_the_next_call() {
    let (_dir, path) = tiny_copy();
    let watch = PolicyWatch::open(&path).unwrap();
    let before = watch.current();
    assert!(allows(&watch, "six"));
    assert!(!allows(&watch, "requests"));
    let text = fs::read_to_string(&path).unwrap();
    rewrite(
        &path,
        &text.replace(
            "[[allow]]\nname = \"six\"\n",
            "[[allow]]\nname = \"six\"\n\n[[allow]]\nname = \"requests\"\n",
        ),
    );
    assert!(allows(&watch, "requests"));
    assert_ne!(watch.current().digest(), before.digest());
    assert_eq!(watch.reloads(), 1);
    // Holders of the old policy keep it whole.
    assert!(before.allowed(&"requests".parse().unwrap()).is_none());
    // Nothing changed since: no reload.
    watch.current();
    assert_eq!(watch.reloads(), 1);
}

#[test]
fn an_edit_of_the_same_size_with_its_mtime_put_back_is_seen() {
    let (_dir, path) = tiny_copy();
    let watch = PolicyWatch::open(&path).unwrap();
    assert_eq!(watch.current().profiles["default"].memory, 256 << 20);
    let meta = fs::metadata(&path).unwrap();
    let text = fs::read_to_string(&path).unwrap();
    // Same length, same inode, and the modification time put back (the
    // change time and the contents tell; the unit tests cover a write whose
    // whole stamp is unchanged).
    rewrite(
        &path,
        &text.replace("memory = \"256M\"", "memory = \"512M\""),
    );
    let f = fs::File::options().write(true).open(&path).unwrap();
    f.set_modified(meta.modified().unwrap()).unwrap();
    drop(f);
    assert_eq!(fs::metadata(&path).unwrap().len(), meta.len());
    assert_eq!(watch.current().profiles["default"].memory, 512 << 20);
}

/// Collects what tracing writes, for the test that checks the log.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_broken_edit_is_ignored_until_it_is_fixed() {
    let (_dir, path) = tiny_copy();
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let watch = PolicyWatch::open(&path).unwrap();
    let good = watch.current();
    let text = fs::read_to_string(&path).unwrap();
    // Two errors: a bad size, and an unknown key.
    let broken = text
        .replace("memory = \"256M\"", "memory = \"lots\"")
        .replace("cpus = 0.5", "cpus = 0.5\ncolour = \"blue\"");
    rewrite(&path, &broken);
    let current = watch.current();
    assert!(
        Arc::ptr_eq(&current, &good),
        "the good policy stays in force"
    );
    let error = watch.last_error().expect("the broken file's error is kept");
    let PolicyLoadError::Invalid { diagnostics, .. } = &*error else {
        panic!("{error}");
    };
    let errors: Vec<_> = diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .collect();
    assert_eq!(errors.len(), 2, "{diagnostics:?}");
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    for d in &errors {
        let at = format!("{}:{}:{}", path.display(), d.line, d.column);
        assert!(log.contains(&at), "{at} not in the log:\n{log}");
    }
    assert!(log.contains("stays in force"), "{log}");
    // Asking again neither reloads nor logs again.
    let logged = log.len();
    assert!(Arc::ptr_eq(&watch.current(), &good));
    assert_eq!(captured.0.lock().unwrap().len(), logged);

    // The fix takes effect at the next call.
    rewrite(
        &path,
        &text.replace("memory = \"256M\"", "memory = \"128M\""),
    );
    assert_eq!(watch.current().profiles["default"].memory, 128 << 20);
    assert!(watch.last_error().is_none());
}

#[test]
fn a_lock_replaced_by_rename_is_picked_up() {
    let (dir, path) = tiny_copy();
    let watch = PolicyWatch::open(&path).unwrap();
    let pinned = |watch: &PolicyWatch| {
        watch.current().lock.as_ref().unwrap().packages[&"six".parse().unwrap()]
            .version
            .clone()
    };
    assert_eq!(pinned(&watch), "1.17.0");
    let lock = dir.path().join("tiny.lock");
    let text = fs::read_to_string(&lock).unwrap();
    // As `policy lock` writes it: a new file renamed over the old one.
    let tmp = dir.path().join(".tiny.lock.new");
    fs::write(&tmp, text.replace("six==1.17.0", "six==1.16.0")).unwrap();
    fs::rename(&tmp, &lock).unwrap();
    assert_eq!(pinned(&watch), "1.16.0");
    // A lock removed: the policy has none.
    fs::remove_file(&lock).unwrap();
    assert!(watch.current().lock.is_none());
}

#[test]
fn a_removed_policy_file_keeps_the_last_good_one() {
    let (_dir, path) = tiny_copy();
    let watch = PolicyWatch::open(&path).unwrap();
    let good = watch.current();
    fs::remove_file(&path).unwrap();
    assert!(Arc::ptr_eq(&watch.current(), &good));
    assert!(matches!(
        watch.last_error().as_deref(),
        Some(PolicyLoadError::Unreadable { .. })
    ));
}
