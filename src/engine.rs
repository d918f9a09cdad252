//! The Docker engine, spoken to through its API with bollard — never through
//! the docker CLI.
//!
//! [`Engine`] wraps a connection and a single-threaded tokio runtime, so the
//! rest of scriptbox stays synchronous: each call blocks on one request.
//! Everything scriptbox creates in the engine carries the [`labels`] below, so
//! that it can be found (by label, without a registry) and cleaned up.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::time::Duration;

use bollard::Docker;
use bollard::models::ImageInspect;
use bollard::query_parameters::{
    BuildImageOptionsBuilder, ListImagesOptionsBuilder, RemoveImageOptionsBuilder,
};
use futures_util::StreamExt;

/// Labels scriptbox puts on images.
pub mod labels {
    /// What the image is: `env` (a script's environment) or `base`.
    pub const KIND: &str = "io.scriptbox.kind";
    /// The full environment key of an `env` image.
    pub const KEY: &str = "io.scriptbox.key";
    /// sha256 of the policy lock the packages were pinned from.
    pub const LOCK_DIGEST: &str = "io.scriptbox.lock-digest";
    /// The id of the image it was built `FROM`.
    pub const BASE: &str = "io.scriptbox.base";
    /// The JSON manifest of what the image's Python can import.
    pub const MANIFEST: &str = "io.scriptbox.manifest";
    /// The image's full Python version (set by the base image).
    pub const PYTHON: &str = "io.scriptbox.python";
    /// Where the image's Python looks for packages (set by the base image).
    pub const SITE_PACKAGES: &str = "io.scriptbox.site-packages";
    /// The name of a base image built from `images/NAME`.
    pub const IMAGE: &str = "io.scriptbox.image";
    /// The digest of the policy a base image's packages come from.
    pub const POLICY_DIGEST: &str = "io.scriptbox.policy-digest";
    /// When scriptbox built it (seconds since the epoch).
    pub const CREATED: &str = "io.scriptbox.created";
    /// Bytes of the layer scriptbox added.
    pub const LAYER_SIZE: &str = "io.scriptbox.layer-size";
}

/// How long one API request may take before the engine counts as not
/// answering (a build streams, so this bounds silence, not the build).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(600);

/// Why the engine could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No engine answers at the endpoint.
    #[error(
        "the Docker engine does not answer at {endpoint}: {reason} (start it with scripts/docker-up, or use --backend venv)"
    )]
    Unreachable {
        /// Where we tried (`DOCKER_HOST` or the default socket).
        endpoint: String,
        /// What went wrong.
        reason: String,
    },
    /// The image does not exist in the engine.
    #[error(
        "image '{0}' is not in the Docker engine (build it: `scriptbox image build`, or scripts/bootstrap-base-image.sh)"
    )]
    NoSuchImage(String),
    /// The engine refused or failed a request.
    #[error("Docker engine: {action}: {reason}")]
    Api {
        /// What was being done.
        action: String,
        /// The engine's message.
        reason: String,
    },
}

/// A connection to the Docker engine.
pub struct Engine {
    docker: Docker,
    runtime: tokio::runtime::Runtime,
    endpoint: String,
}

/// One image as scriptbox sees it.
#[derive(Debug, Clone)]
pub struct ImageInfo {
    /// The image id (`sha256:...`).
    pub id: String,
    /// Its tags.
    pub tags: Vec<String>,
    /// Its labels.
    pub labels: HashMap<String, String>,
    /// Total size in bytes, as the engine reports it.
    pub size: u64,
    /// The user its containers run as (empty: root).
    pub user: String,
}

impl ImageInfo {
    /// A label's value.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.get(name).map(String::as_str)
    }
}

impl From<ImageInspect> for ImageInfo {
    fn from(i: ImageInspect) -> ImageInfo {
        ImageInfo {
            id: i.id.unwrap_or_default(),
            tags: i.repo_tags.unwrap_or_default(),
            user: i
                .config
                .as_ref()
                .and_then(|c| c.user.clone())
                .unwrap_or_default(),
            labels: i.config.and_then(|c| c.labels).unwrap_or_default(),
            size: i.size.unwrap_or(0).max(0) as u64,
        }
    }
}

impl Engine {
    /// Connects to the engine named by `DOCKER_HOST`, or the local socket,
    /// and agrees on an API version (engines as old as 20.10 answer).
    pub fn connect() -> Result<Engine, EngineError> {
        Self::connect_within(Duration::from_secs(10))
    }

    /// [`Engine::connect`], giving up when the engine has not answered
    /// within `wait` (`scriptbox doctor` must not hang on a dead daemon).
    pub fn connect_within(wait: Duration) -> Result<Engine, EngineError> {
        let endpoint = std::env::var("DOCKER_HOST")
            .unwrap_or_else(|_| "unix:///var/run/docker.sock".to_string());
        let unreachable = |reason: String| EngineError::Unreachable {
            endpoint: endpoint.clone(),
            reason,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| unreachable(format!("cannot start the I/O runtime: {e}")))?;
        let docker = Docker::connect_with_defaults()
            .map_err(|e| unreachable(e.to_string()))?
            .with_timeout(REQUEST_TIMEOUT);
        let docker = runtime
            .block_on(async { tokio::time::timeout(wait, docker.negotiate_version()).await })
            .map_err(|_| unreachable(format!("no answer within {} s", wait.as_secs_f64())))?
            .map_err(|e| unreachable(error_text(&e)))?;
        Ok(Engine {
            docker,
            runtime,
            endpoint,
        })
    }

    /// The same connection with each request bounded by `timeout` instead
    /// of the default (which allows for long, silent builds).
    pub fn with_timeout(mut self, timeout: Duration) -> Engine {
        self.docker = self.docker.clone().with_timeout(timeout);
        self
    }

    /// The endpoint in use.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The bollard client, for callers that drive their own requests.
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// Runs a future on the engine's runtime.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// The image with this name or id, or `None` when the engine has none.
    pub fn image(&self, name: &str) -> Result<Option<ImageInfo>, EngineError> {
        match self.block_on(self.docker.inspect_image(name)) {
            Ok(i) => Ok(Some(i.into())),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(self.api("inspecting an image", &e)),
        }
    }

    /// Images carrying every `label=value` (or bare `label`) filter given.
    pub fn images_labelled(&self, filters: &[String]) -> Result<Vec<ImageInfo>, EngineError> {
        let filters: HashMap<String, Vec<String>> =
            HashMap::from([("label".to_string(), filters.to_vec())]);
        let options = ListImagesOptionsBuilder::default()
            .filters(&filters)
            .build();
        let list = self
            .block_on(self.docker.list_images(Some(options)))
            .map_err(|e| self.api("listing images", &e))?;
        Ok(list
            .into_iter()
            .map(|s| ImageInfo {
                id: s.id,
                tags: s.repo_tags,
                labels: s.labels,
                size: s.size.max(0) as u64,
                user: String::new(),
            })
            .collect())
    }

    /// The bytes of the file at `path` in `image`, read through a container
    /// that is created, never started, and removed again.
    pub fn read_file(&self, image: &str, path: &str) -> Result<Vec<u8>, EngineError> {
        use bollard::models::ContainerCreateBody;
        use bollard::query_parameters::{
            DownloadFromContainerOptionsBuilder, RemoveContainerOptionsBuilder,
        };
        let body = ContainerCreateBody {
            image: Some(image.to_string()),
            labels: Some(HashMap::from([(
                labels::KIND.to_string(),
                "probe".to_string(),
            )])),
            network_disabled: Some(true),
            ..Default::default()
        };
        let created = self
            .block_on(self.docker.create_container(None, body))
            .map_err(|e| self.api("creating a container to read a file", &e))?;
        let options = DownloadFromContainerOptionsBuilder::default()
            .path(path)
            .build();
        let archive: Result<Vec<u8>, bollard::errors::Error> = self.block_on(async {
            let mut out = Vec::new();
            let mut stream = self
                .docker
                .download_from_container(&created.id, Some(options));
            while let Some(chunk) = stream.next().await {
                out.extend_from_slice(&chunk?);
            }
            Ok(out)
        });
        let remove = RemoveContainerOptionsBuilder::default().force(true).build();
        let _ = self.block_on(self.docker.remove_container(&created.id, Some(remove)));
        let archive = archive.map_err(|e| self.api(&format!("reading {path} from {image}"), &e))?;
        let mut tar = tar::Archive::new(archive.as_slice());
        let missing = || EngineError::Api {
            action: format!("reading {path} from {image}"),
            reason: "the archive holds no file".into(),
        };
        let mut entry = tar
            .entries()
            .map_err(|_| missing())?
            .flatten()
            .next()
            .ok_or_else(missing)?;
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes).map_err(|_| missing())?;
        Ok(bytes)
    }

    /// Removes an image (by id or tag), untagging it everywhere.
    pub fn remove_image(&self, name: &str) -> Result<(), EngineError> {
        let options = RemoveImageOptionsBuilder::default()
            .force(true)
            .noprune(false)
            .build();
        self.block_on(self.docker.remove_image(name, Some(options), None))
            .map(|_| ())
            .map_err(|e| self.api("removing an image", &e))
    }

    /// Builds an image from the directory `context` (sent as a tar stream)
    /// with network mode `network` (`none` for everything scriptbox builds
    /// from packages), tags it `tag` and returns its id. `on_line` sees
    /// each line of the builder's output as it arrives.
    ///
    /// `labels` are appended to the context's Dockerfile as one `LABEL`
    /// instruction: the build API's label option makes the classic builder
    /// commit one step per label, seconds each on slow storage drivers.
    pub fn build(
        &self,
        context: &Path,
        tag: &str,
        labels: &HashMap<String, String>,
        build_args: &HashMap<String, String>,
        network: &str,
        on_line: &mut dyn FnMut(&str),
    ) -> Result<String, EngineError> {
        let dockerfile = context.join("Dockerfile");
        let mut text = std::fs::read_to_string(&dockerfile).map_err(|e| EngineError::Api {
            action: format!("building {tag}"),
            reason: format!("{}: {e}", dockerfile.display()),
        })?;
        if !labels.is_empty() {
            text.push_str(&label_instruction(labels));
            std::fs::write(&dockerfile, &text).map_err(|e| EngineError::Api {
                action: format!("building {tag}"),
                reason: format!("{}: {e}", dockerfile.display()),
            })?;
        }
        let options = BuildImageOptionsBuilder::default()
            .dockerfile("Dockerfile")
            .t(tag)
            .buildargs(build_args)
            .rm(true)
            .forcerm(true)
            .pull("false")
            .networkmode(network)
            .build();
        let body = bollard::body_try_stream(tar_stream(context.to_path_buf()));
        let mut stream = self.docker.build_image(options, None, Some(body));
        let mut log = String::new();
        let failure = self.block_on(async {
            while let Some(item) = stream.next().await {
                match item {
                    Ok(info) => {
                        if let Some(detail) = info.error_detail {
                            return Some(detail.message.unwrap_or_default());
                        }
                        if let Some(text) = info.stream {
                            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                                on_line(line);
                                log.push_str(line);
                                log.push('\n');
                            }
                        }
                    }
                    Err(e) => return Some(error_text(&e)),
                }
            }
            None
        });
        if let Some(reason) = failure {
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(EngineError::Api {
                action: format!("building {tag}"),
                reason: format!("{}\n{}", reason.trim(), tail.join("\n")),
            });
        }
        self.image(tag)?
            .map(|i| i.id)
            .ok_or_else(|| EngineError::Api {
                action: format!("building {tag}"),
                reason: "the build reported success but the image is missing".into(),
            })
    }

    fn api(&self, action: &str, e: &bollard::errors::Error) -> EngineError {
        match e {
            bollard::errors::Error::HyperResponseError { .. }
            | bollard::errors::Error::IOError { .. }
            | bollard::errors::Error::RequestTimeoutError => EngineError::Unreachable {
                endpoint: self.endpoint.clone(),
                reason: error_text(e),
            },
            _ => EngineError::Api {
                action: action.into(),
                reason: error_text(e),
            },
        }
    }
}

/// One `LABEL` instruction setting every label, values quoted with the
/// Dockerfile's escapes (`\\`, `\"`, and `\$` so nothing is substituted).
fn label_instruction(labels: &HashMap<String, String>) -> String {
    let quote = |s: &str| {
        let mut out = String::with_capacity(s.len() + 2);
        out.push('"');
        for c in s.chars() {
            match c {
                '\\' | '"' | '$' => {
                    out.push('\\');
                    out.push(c);
                }
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
        out
    };
    let mut keys: Vec<&String> = labels.keys().collect();
    keys.sort();
    let mut line = String::from("\nLABEL");
    for k in keys {
        line.push_str(&format!(" {}={}", quote(k), quote(&labels[k])));
    }
    line.push('\n');
    line
}

fn error_text(e: &bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// The directory as an uncompressed tar stream, produced on a thread so that
/// a large context is never held in memory whole. Symlinks are kept as
/// symlinks; modification times are kept (compiled bytecode checks them).
fn tar_stream(
    dir: std::path::PathBuf,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(16);
    std::thread::spawn(move || {
        let writer = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        let mut tar = tar::Builder::new(writer);
        tar.follow_symlinks(false);
        let result = tar
            .append_dir_all(".", &dir)
            .and_then(|()| tar.into_inner())
            .and_then(|mut writer| writer.flush_chunk());
        // An error fails the request, so a partial context is never built.
        if let Err(e) = result {
            let _ = tx.blocking_send(Err(e));
        }
    });
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    })
}

const CHUNK: usize = 1 << 20;

struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn flush_chunk(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = bytes::Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "build ended"))
    }
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush_chunk()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.flush_chunk()
    }
}
