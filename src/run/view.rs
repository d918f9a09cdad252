//! The environment as the local sandboxes see it, at neutral paths: the
//! interpreter's prefix at [`PYTHON_DIR`], the environment's layers at
//! `/env/0`, `/env/1`, … (top first), and a small venv at [`VENV_DIR`],
//! written for the run, that ties them together. The script runs
//! `/venv/bin/python`, so neither `sys.executable`, `sys.path` nor
//! `/proc/self/mountinfo` names the host's cache or interpreter.
//!
//! Why a venv of its own: a layer's `pyvenv.cfg`, its `bin/python` link and
//! the `.pth` file naming the layers below it all hold host paths, and the
//! layers are shared, read-only and content-addressed, so they cannot be
//! rewritten per run. The run's venv names the same trees at their neutral
//! paths: its `.pth` file adds the top layer as a site directory (its own
//! `.pth` files are processed, as when it was the venv) and the layers
//! below as plain entries, in the same order as the layers' own file.
//!
//! Why overlays under bwrap ([`MountPlan`]): every bind mount shows its
//! source's path within the host file system in mountinfo's `root` field,
//! whatever its target. bwrap therefore binds each tree at a stage path,
//! and the sandbox's init ([`super::init`]), before it starts anything,
//! mounts a read-only overlay of each stage at the tree's neutral path
//! (an overlay's root is `/`, and its options name only the stage) and
//! unmounts the stages. gVisor's bundle binds the trees at their neutral
//! paths itself, and its mountinfo names no bind's host source.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::RunError;

/// Where the interpreter's prefix appears (unless it is under `/usr`,
/// which every sandbox binds at its own path).
pub const PYTHON_DIR: &str = "/python";
/// Where the environment's layers appear, as `0`, `1`, … top first.
pub const LAYERS_DIR: &str = "/env";
/// Where the run's venv appears.
pub const VENV_DIR: &str = "/venv";
/// The run venv's `.pth` file naming the layers.
const LAYERS_PTH: &str = "_scriptbox_layers.pth";

/// A host tree and where the sandbox sees it, read-only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tree {
    /// The host directory.
    pub host: PathBuf,
    /// Its path inside the sandbox.
    pub inside: PathBuf,
}

/// One entry of a small generated tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Entry {
    /// A regular file (mode 0644) with this text.
    File {
        /// Its path, relative to the tree's root.
        path: PathBuf,
        /// Its contents.
        text: String,
    },
    /// A symbolic link.
    Link {
        /// Its path, relative to the tree's root.
        path: PathBuf,
        /// What it points at.
        target: PathBuf,
    },
}

/// The run's venv: a handful of files, written where the sandbox sees
/// [`VENV_DIR`] (by the init into a tmpfs under bwrap, into the bundle's
/// root under gVisor).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VenvTree {
    /// Its entries; directories are made as needed (0755).
    pub entries: Vec<Entry>,
}

impl VenvTree {
    /// Writes every entry below `root`, which must exist.
    pub fn write_into(&self, root: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let mut dirs = fs::DirBuilder::new();
        dirs.recursive(true).mode(0o755);
        for entry in &self.entries {
            let (Entry::File { path, .. } | Entry::Link { path, .. }) = entry;
            // Only relative paths below the root (the plan is ours, but a
            // path that climbs out would write outside the tmpfs).
            if path.is_absolute()
                || path
                    .components()
                    .any(|c| !matches!(c, std::path::Component::Normal(_)))
            {
                return Err(std::io::Error::other(format!(
                    "{}: not a plain relative path",
                    path.display()
                )));
            }
            let at = root.join(path);
            if let Some(parent) = at.parent() {
                dirs.create(parent)?;
            }
            match entry {
                Entry::File { text, .. } => {
                    fs::write(&at, text)?;
                    fs::set_permissions(&at, fs::Permissions::from_mode(0o644))?;
                }
                Entry::Link { target, .. } => std::os::unix::fs::symlink(target, &at)?,
            }
        }
        Ok(())
    }
}

/// The environment of one run as the sandbox sees it.
#[derive(Debug, Clone)]
pub struct EnvView {
    /// The trees to mount read-only: the interpreter's prefix (unless it is
    /// under `/usr`), then the layers, top first.
    pub trees: Vec<Tree>,
    /// Paths inside to hide under an empty read-only tmpfs: the
    /// interpreter's own site-packages, which hold the host's packages.
    pub hidden: Vec<PathBuf>,
    /// The run's venv.
    pub venv: VenvTree,
    /// Variables the script needs (the loader's path to a relocated
    /// interpreter's `libpython`).
    pub environment: Vec<(String, String)>,
}

impl EnvView {
    /// The view of the venv environment at `venv` whose layers' site-packages
    /// are `site_packages` (top first).
    pub fn new(venv: &Path, site_packages: &[PathBuf]) -> Result<EnvView, RunError> {
        let cfg_path = venv.join("pyvenv.cfg");
        let cfg = fs::read_to_string(&cfg_path)
            .map_err(|e| RunError::Environment(format!("{}: {e}", cfg_path.display())))?;
        let prefix = interpreter_prefix(venv, &cfg)?;
        let relocated = !prefix.starts_with("/usr");
        let python_inside = if relocated {
            PathBuf::from(PYTHON_DIR)
        } else {
            prefix.clone()
        };
        let inside = |host: &Path| -> PathBuf {
            match host.strip_prefix(&prefix) {
                Ok(rest) if relocated => python_inside.join(rest),
                _ => host.to_path_buf(),
            }
        };
        let mut trees = Vec::new();
        if relocated {
            trees.push(Tree {
                host: prefix.clone(),
                inside: python_inside.clone(),
            });
        }
        // `lib/pythonX.Y/site-packages`, the same in every layer.
        let site_rel = site_packages
            .first()
            .and_then(|s| {
                let dir = s.ancestors().nth(3)?;
                s.strip_prefix(dir).ok().map(Path::to_path_buf)
            })
            .ok_or_else(|| {
                RunError::Environment(format!("{}: no site-packages", venv.display()))
            })?;
        let mut layers = Vec::new();
        for (i, site) in site_packages.iter().enumerate() {
            let Some(dir) = site.ancestors().nth(3) else {
                continue;
            };
            let at = Path::new(LAYERS_DIR).join(i.to_string());
            layers.push(at.join(&site_rel));
            trees.push(Tree {
                host: dir.to_path_buf(),
                inside: at,
            });
        }
        let hidden = fs::read_dir(prefix.join("lib"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.path().join("site-packages"))
                    .filter(|p| p.is_dir())
                    .map(|p| inside(&p))
                    .collect()
            })
            .unwrap_or_default();
        let venv_tree = venv_tree(venv, &cfg, &prefix, &python_inside, &site_rel, &layers)?;
        let mut environment = Vec::new();
        if relocated && has_libpython(&prefix) {
            // Its RUNPATH names the host prefix; the loader's path comes
            // first.
            environment.push((
                "LD_LIBRARY_PATH".to_string(),
                python_inside.join("lib").display().to_string(),
            ));
        }
        Ok(EnvView {
            trees,
            hidden,
            venv: venv_tree,
            environment,
        })
    }

    /// The interpreter the script runs.
    pub fn python(&self) -> PathBuf {
        Path::new(VENV_DIR).join("bin").join("python")
    }
}

/// Whether the interpreter links a shared `libpython` from its prefix.
fn has_libpython(prefix: &Path) -> bool {
    fs::read_dir(prefix.join("lib")).is_ok_and(|d| {
        d.flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("libpython"))
    })
}

/// The run's venv: `pyvenv.cfg` with the interpreter's neutral home (the
/// layer's other keys kept, any naming the host prefix dropped), the
/// `bin/python*` links to the interpreter at its neutral path, and the
/// `.pth` file naming the layers.
fn venv_tree(
    venv: &Path,
    cfg: &str,
    prefix: &Path,
    python_inside: &Path,
    site_rel: &Path,
    layers: &[PathBuf],
) -> Result<VenvTree, RunError> {
    let env_err =
        |what: &Path, e: std::io::Error| RunError::Environment(format!("{}: {e}", what.display()));
    let host_prefix = prefix.display().to_string();
    let mut text = format!("home = {}\n", python_inside.join("bin").display());
    for line in cfg.lines() {
        let key = line.split_once('=').map_or("", |(k, _)| k.trim());
        if key.is_empty() || key == "home" || line.contains(&host_prefix) {
            continue;
        }
        text.push_str(line);
        text.push('\n');
    }
    let mut entries = vec![Entry::File {
        path: PathBuf::from("pyvenv.cfg"),
        text,
    }];
    // The interpreter the layer's `bin/python` names, relative to its
    // prefix (`bin/python3.11`).
    let link = venv.join("bin").join("python");
    let target = fs::read_link(&link).map_err(|e| env_err(&link, e))?;
    let target = if target.is_absolute() {
        target
    } else {
        venv.join("bin").join(target)
    };
    let exe = match target.strip_prefix(prefix) {
        Ok(rest) => python_inside.join(rest),
        Err(_) => python_inside
            .join("bin")
            .join(target.file_name().unwrap_or_default()),
    };
    let minor = site_rel
        .parent()
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "python3".into());
    for name in ["python", "python3", minor.as_str()] {
        let path = Path::new("bin").join(name);
        if !entries
            .iter()
            .any(|e| matches!(e, Entry::Link { path: p, .. } if *p == path))
        {
            entries.push(Entry::Link {
                path,
                target: exe.clone(),
            });
        }
    }
    // The top layer as a site directory (its `.pth` files run), the ones
    // below as entries.
    let mut pth = String::new();
    for (i, layer) in layers.iter().enumerate() {
        let dir = layer.display().to_string();
        if i == 0 {
            pth.push_str(&format!("import site; site.addsitedir({dir:?})\n"));
        } else {
            pth.push_str(&dir);
            pth.push('\n');
        }
    }
    entries.push(Entry::File {
        path: site_rel.join(LAYERS_PTH),
        text: pth,
    });
    Ok(VenvTree { entries })
}

/// The interpreter prefix a venv is based on (`home` in its `pyvenv.cfg`,
/// `cfg`, less its `bin`).
fn interpreter_prefix(venv: &Path, cfg: &str) -> Result<PathBuf, RunError> {
    let home = cfg
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == "home").then(|| PathBuf::from(v.trim()))
        })
        .ok_or_else(|| RunError::Environment(format!("{}: no 'home'", venv.display())))?;
    let prefix = home.parent().map(Path::to_path_buf).unwrap_or(home);
    // Mounted read-only into the sandbox whole: it must be an
    // interpreter's installation, never `/` or a home directory.
    let is_install = prefix != Path::new("/")
        && fs::read_dir(prefix.join("lib")).is_ok_and(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("python3"))
        });
    if !is_install {
        return Err(RunError::Environment(format!(
            "{}: the venv's interpreter prefix {} does not look like a Python installation",
            venv.display(),
            prefix.display()
        )));
    }
    Ok(prefix)
}

/// Where bwrap stages the trees for the init, and the overlays' second
/// (empty) lower layer: overlayfs needs two lower layers without an upper
/// one.
pub const STAGE_DIR: &str = "/.stage";

/// Every tree of `view`, then `extra`, with the stage path bwrap binds it
/// at (`<STAGE_DIR>/<i>`): the one numbering [`MountPlan::for_view`] and
/// [`MountPlan::staged_binds`] share.
fn staged<'a>(view: &'a EnvView, extra: &'a [Tree]) -> impl Iterator<Item = (PathBuf, &'a Tree)> {
    view.trees
        .iter()
        .chain(extra)
        .enumerate()
        .map(|(i, tree)| (Path::new(STAGE_DIR).join(i.to_string()), tree))
}

/// What the init of a bwrap sandbox mounts before it starts anything,
/// with `CAP_SYS_ADMIN` it then drops (see the module's doc).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountPlan {
    /// Staged binds and their targets: each becomes a read-only overlay
    /// at its target.
    pub overlays: Vec<(PathBuf, PathBuf)>,
    /// The empty directory every overlay has as its second lower layer.
    pub empty: PathBuf,
    /// Hidden under an empty read-only tmpfs, after the overlays.
    pub hidden: Vec<PathBuf>,
    /// Written into a tmpfs at [`VENV_DIR`], then made read-only.
    pub venv: Option<VenvTree>,
    /// Mounts detached at the end (the stages, the init's own binary).
    pub detach: Vec<PathBuf>,
}

impl MountPlan {
    /// The plan for `view` where bwrap bound tree `i` at `<STAGE_DIR>/i`
    /// (see [`MountPlan::staged_binds`]), with `extra` trees after the
    /// view's (the script's directory), and `detach` to go at the end.
    pub fn for_view(view: &EnvView, extra: &[Tree], detach: &[PathBuf]) -> MountPlan {
        let stage = Path::new(STAGE_DIR);
        let overlays: Vec<(PathBuf, PathBuf)> = staged(view, extra)
            .map(|(at, tree)| (at, tree.inside.clone()))
            .collect();
        let mut all_detached: Vec<PathBuf> = overlays.iter().map(|(s, _)| s.clone()).collect();
        all_detached.extend(detach.iter().cloned());
        MountPlan {
            overlays,
            empty: stage.join("empty"),
            hidden: view.hidden.clone(),
            venv: Some(view.venv.clone()),
            detach: all_detached,
        }
    }

    /// bwrap's arguments that stage the trees and make every mount point
    /// the plan needs.
    pub fn staged_binds(view: &EnvView, extra: &[Tree]) -> Vec<String> {
        let stage = Path::new(STAGE_DIR);
        let mut args: Vec<String> = Vec::new();
        let dir = |path: &Path, args: &mut Vec<String>| {
            args.extend(["--perms".into(), "0755".into(), "--dir".into()]);
            args.push(path.display().to_string());
        };
        dir(stage, &mut args);
        dir(&stage.join("empty"), &mut args);
        dir(Path::new(VENV_DIR), &mut args);
        for (at, tree) in staged(view, extra) {
            if let Some(parent) = tree.inside.parent()
                && parent != Path::new("/")
            {
                dir(parent, &mut args);
            }
            dir(&tree.inside, &mut args);
            args.extend([
                "--ro-bind".into(),
                tree.host.display().to_string(),
                at.display().to_string(),
            ]);
        }
        args
    }

    /// Carries the plan out. An overlay the kernel refuses (no overlayfs,
    /// or stacked too deep) falls back to moving the staged bind to its
    /// target: the run goes on, and that tree's host path shows in
    /// mountinfo as it did before.
    pub fn apply(&self) -> Result<(), String> {
        use rustix::mount::{MountFlags, UnmountFlags, mount, mount_move, mount_remount, unmount};
        let at = |what: &str, path: &Path, e: rustix::io::Errno| {
            format!("{what} {}: {e}", path.display())
        };
        let ro = MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV;
        // Mount data: plain ASCII made here, never a NUL.
        let data = |text: &str| std::ffi::CString::new(text).expect("no NUL in mount data");
        for (stage, target) in &self.overlays {
            let options = format!("lowerdir={}:{}", stage.display(), self.empty.display());
            let options = data(&options);
            if mount("overlay", target, "overlay", ro, Some(options.as_c_str())).is_err() {
                mount_move(stage, target).map_err(|e| at("moving", stage, e))?;
            }
        }
        for path in &self.hidden {
            mount(
                "tmpfs",
                path,
                "tmpfs",
                ro | MountFlags::NOEXEC,
                Some(data("size=4k,mode=755").as_c_str()),
            )
            .map_err(|e| at("hiding", path, e))?;
        }
        if let Some(venv) = &self.venv {
            let dir = Path::new(VENV_DIR);
            mount(
                "tmpfs",
                dir,
                "tmpfs",
                MountFlags::NOSUID | MountFlags::NODEV,
                Some(data("size=1m,mode=755").as_c_str()),
            )
            .map_err(|e| at("mounting", dir, e))?;
            venv.write_into(dir)
                .map_err(|e| format!("writing {}: {e}", dir.display()))?;
            mount_remount(dir, MountFlags::BIND | ro, "").map_err(|e| at("remounting", dir, e))?;
        }
        for path in &self.detach {
            // A stage already moved to its target is gone from here.
            match unmount(path, UnmountFlags::DETACH) {
                Ok(()) | Err(rustix::io::Errno::INVAL) => {}
                Err(e) => return Err(at("detaching", path, e)),
            }
        }
        // Empty directories now, and nothing refers to them by name but
        // the overlays' options; best effort.
        for (stage, _) in &self.overlays {
            let _ = fs::remove_dir(stage);
        }
        let _ = fs::remove_dir(&self.empty);
        if let Some(root) = self.empty.parent() {
            let _ = fs::remove_dir(root);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A prefix that looks like an interpreter's installation with a
    /// shared libpython, and a layer venv based on it.
    fn fake_env(root: &Path) -> (PathBuf, PathBuf) {
        let prefix = root.join("versions/3.11.7");
        fs::create_dir_all(prefix.join("bin")).unwrap();
        fs::create_dir_all(prefix.join("lib/python3.11/site-packages")).unwrap();
        fs::write(prefix.join("lib/libpython3.11.so.1.0"), b"").unwrap();
        let venv = root.join("cache/envs/venv/k1");
        fs::create_dir_all(venv.join("bin")).unwrap();
        fs::create_dir_all(venv.join("lib/python3.11/site-packages")).unwrap();
        std::os::unix::fs::symlink(prefix.join("bin/python3.11"), venv.join("bin/python")).unwrap();
        fs::write(
            venv.join("pyvenv.cfg"),
            format!(
                "home = {}/bin\nimplementation = CPython\nversion_info = 3.11.7\ninclude-system-site-packages = false\nprompt = {}\n",
                prefix.display(),
                prefix.display()
            ),
        )
        .unwrap();
        (prefix, venv)
    }

    fn file<'a>(tree: &'a VenvTree, path: &str) -> &'a str {
        tree.entries
            .iter()
            .find_map(|e| match e {
                Entry::File { path: p, text } if p == Path::new(path) => Some(text.as_str()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no {path} in {tree:?}"))
    }

    #[test]
    fn the_view_names_no_host_path_and_keeps_the_layer_order() {
        let dir = tempfile::tempdir().unwrap();
        let (prefix, venv) = fake_env(dir.path());
        let base = dir.path().join("cache/envs/venv/k0");
        let sites = [
            venv.join("lib/python3.11/site-packages"),
            base.join("lib/python3.11/site-packages"),
        ];
        let view = EnvView::new(&venv, &sites).unwrap();
        let inside: Vec<_> = view.trees.iter().map(|t| t.inside.clone()).collect();
        assert_eq!(inside, ["/python", "/env/0", "/env/1"].map(PathBuf::from));
        assert_eq!(view.trees[0].host, prefix);
        assert_eq!(view.trees[1].host, venv);
        assert_eq!(view.trees[2].host, base);
        assert_eq!(
            view.hidden,
            [PathBuf::from("/python/lib/python3.11/site-packages")]
        );
        assert_eq!(
            view.environment,
            [("LD_LIBRARY_PATH".to_string(), "/python/lib".to_string())]
        );
        assert_eq!(view.python(), Path::new("/venv/bin/python"));
        let cfg = file(&view.venv, "pyvenv.cfg");
        assert!(cfg.starts_with("home = /python/bin\n"), "{cfg}");
        assert!(cfg.contains("version_info = 3.11.7\n"), "{cfg}");
        // The `prompt` line named the host prefix: dropped.
        assert!(!cfg.contains(&dir.path().display().to_string()), "{cfg}");
        let pth = file(
            &view.venv,
            "lib/python3.11/site-packages/_scriptbox_layers.pth",
        );
        assert_eq!(
            pth,
            "import site; site.addsitedir(\"/env/0/lib/python3.11/site-packages\")\n\
             /env/1/lib/python3.11/site-packages\n"
        );
        let links: Vec<_> = view
            .venv
            .entries
            .iter()
            .filter_map(|e| match e {
                Entry::Link { path, target } => Some((path.clone(), target.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(links.len(), 3, "{links:?}");
        for (_, target) in &links {
            assert_eq!(target, Path::new("/python/bin/python3.11"));
        }
        let staged = MountPlan::staged_binds(&view, &[]);
        let plan = MountPlan::for_view(&view, &[], &[PathBuf::from("/x")]);
        assert_eq!(plan.overlays[2], ("/.stage/2".into(), "/env/1".into()));
        assert!(staged.windows(3).any(|w| w
            == [
                "--ro-bind".to_string(),
                base.display().to_string(),
                "/.stage/2".to_string()
            ]));
        assert_eq!(plan.detach.last().unwrap(), Path::new("/x"));
    }

    #[test]
    fn an_interpreter_under_usr_stays_where_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let venv = dir.path().join("k");
        fs::create_dir_all(venv.join("bin")).unwrap();
        fs::create_dir_all(venv.join("lib/python3.11/site-packages")).unwrap();
        let Some(python) = ["/usr/bin/python3.11", "/usr/bin/python3"]
            .iter()
            .find(|p| Path::new(p).exists())
        else {
            return;
        };
        std::os::unix::fs::symlink(python, venv.join("bin/python")).unwrap();
        fs::write(venv.join("pyvenv.cfg"), "home = /usr/bin\n").unwrap();
        let view = EnvView::new(&venv, &[venv.join("lib/python3.11/site-packages")]).unwrap();
        assert_eq!(view.trees.len(), 1, "{view:?}");
        assert!(view.environment.is_empty());
        assert!(file(&view.venv, "pyvenv.cfg").starts_with("home = /usr/bin\n"));
    }

    #[test]
    fn a_venv_tree_writes_files_and_links_and_refuses_to_climb_out() {
        let dir = tempfile::tempdir().unwrap();
        let tree = VenvTree {
            entries: vec![
                Entry::File {
                    path: "a/b.cfg".into(),
                    text: "x\n".into(),
                },
                Entry::Link {
                    path: "bin/python".into(),
                    target: "/python/bin/python3".into(),
                },
            ],
        };
        tree.write_into(dir.path()).unwrap();
        assert_eq!(
            fs::read_to_string(dir.path().join("a/b.cfg")).unwrap(),
            "x\n"
        );
        assert_eq!(
            fs::read_link(dir.path().join("bin/python")).unwrap(),
            Path::new("/python/bin/python3")
        );
        for bad in ["../escape", "/abs", "a/../../b"] {
            let tree = VenvTree {
                entries: vec![Entry::File {
                    path: bad.into(),
                    text: String::new(),
                }],
            };
            assert!(tree.write_into(dir.path()).is_err(), "{bad}");
        }
        assert!(!dir.path().parent().unwrap().join("escape").exists());
    }

    /// The plan's mounts, carried out in a thread of its own mount
    /// namespace (root only): an overlay where the kernel allows one, with
    /// no host path in mountinfo, and the staged bind moved where it does
    /// not (here: its empty lower layer is missing).
    #[test]
    fn a_plan_mounts_overlays_and_falls_back_to_moving_the_stage() {
        // SAFETY: geteuid only reads this process's credentials.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root for a mount namespace");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        std::thread::spawn(move || {
            use rustix::mount::{MountPropagationFlags, mount_bind, mount_change};
            use rustix::thread::{UnshareFlags, unshare_unsafe};
            // SAFETY: only this thread's file-system state and mount
            // namespace become its own; nothing else in it relies on them.
            unsafe { unshare_unsafe(UnshareFlags::FS | UnshareFlags::NEWNS) }.unwrap();
            mount_change(
                "/",
                MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
            )
            .unwrap();
            let host = root.join("host/tree");
            fs::create_dir_all(&host).unwrap();
            fs::write(host.join("f"), "content").unwrap();
            for d in ["stage0", "stage1", "empty", "target0", "target1"] {
                fs::create_dir_all(root.join(d)).unwrap();
            }
            mount_bind(&host, root.join("stage0")).unwrap();
            mount_bind(&host, root.join("stage1")).unwrap();
            let overlay = MountPlan {
                overlays: vec![(root.join("stage0"), root.join("target0"))],
                empty: root.join("empty"),
                detach: vec![root.join("stage0")],
                ..MountPlan::default()
            };
            overlay.apply().unwrap();
            let moved = MountPlan {
                overlays: vec![(root.join("stage1"), root.join("target1"))],
                empty: root.join("missing"),
                detach: vec![root.join("stage1")],
                ..MountPlan::default()
            };
            moved.apply().unwrap();
            for t in ["target0", "target1"] {
                assert_eq!(
                    fs::read_to_string(root.join(t).join("f")).unwrap(),
                    "content"
                );
            }
            let info = fs::read_to_string("/proc/thread-self/mountinfo").unwrap();
            let line = |t: &str| {
                let at = root.join(t).display().to_string();
                info.lines()
                    .find(|l| l.split(' ').nth(4) == Some(at.as_str()))
                    .map(str::to_string)
            };
            let overlaid = line("target0").expect("an overlay at target0");
            assert!(overlaid.contains(" - overlay "), "{overlaid}");
            assert_eq!(overlaid.split(' ').nth(3), Some("/"), "{overlaid}");
            assert!(!overlaid.contains("host/tree"), "{overlaid}");
            let bound = line("target1").expect("the moved bind at target1");
            assert!(bound.contains("host/tree"), "{bound}");
            assert!(
                line("stage0").is_none() && line("stage1").is_none(),
                "{info}"
            );
        })
        .join()
        .unwrap();
    }
}
